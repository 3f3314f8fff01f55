"""Hostile and broken input: every failure is one of the library's errors, refused early and cheaply."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clothing_preproc import (
    InputTooLarge,
    Limits,
    NotAnImage,
    PreprocessConfig,
    PreprocessingError,
    TooManyPixels,
    UnreadableImage,
    decode_image,
    open_image,
    preprocess_image,
)
from testing_support.sample_images import encode, make_image

SMALL = PreprocessConfig(target_size=(32, 32))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header of any size followed by pixel data that is garbage."""
    return png_header(width, height) + _chunk(b"IDAT", b"junk")


def png_bomb(width: int, height: int) -> bytes:
    """A valid RGB PNG of zeros: ~1000× smaller than its pixels (192 MB for 8000×8000)."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + 3 * width)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return png_header(width, height) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def jpeg_with_size(width: int, height: int) -> bytes:
    """A real JPEG whose frame header claims another size (the scan data is the original's)."""
    data = bytearray(encode(make_image("RGB", 16, 16, seed=1), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def gif_with_size(width: int, height: int) -> bytes:
    data = bytearray(encode(make_image("P", 16, 16, seed=1), "GIF"))
    struct.pack_into("<HH", data, 6, width, height)
    return bytes(data)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return png_bomb(8000, 8000)


def test_a_decompression_bomb_is_refused_before_decoding(bomb: bytes) -> None:
    assert len(bomb) < Limits().max_bytes // 50  # tiny on the wire...
    with pytest.raises(TooManyPixels, match="8000×8000 = 64000000 pixels; the limit is 50000000"):
        decode_image(bomb)  # ...but 64 M pixels, above the default limit


def peak_memory_growth_kib(bomb_path: Path, max_pixels: int) -> tuple[str, int]:
    """(outcome, KiB) of decoding the file in a fresh process, over its peak after a small image.

    Peak RSS is per process, hence the child: its growth is what the bomb cost, nothing else.
    """
    script = textwrap.dedent(
        f"""
        import json, resource
        from clothing_preproc import Limits, PreprocessConfig, TooManyPixels, decode_image
        from testing_support.sample_images import encode, make_image
        decode_image(encode(make_image("RGB", 640, 480, seed=0), "PNG"))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        data = open({str(bomb_path)!r}, "rb").read()
        try:
            decode_image(data, PreprocessConfig(limits=Limits(max_pixels={max_pixels})))
            outcome = "decoded"
        except TooManyPixels:
            outcome = "refused"
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps([outcome, after - before]))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    outcome, growth = json.loads(run.stdout.strip().splitlines()[-1])
    return str(outcome), int(growth)


def test_a_decompression_bomb_costs_little_memory(bomb: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    # The control: allowed through, the bomb's 64 M pixels take 192 MB as RGB...
    outcome, growth = peak_memory_growth_kib(path, max_pixels=100_000_000)
    assert outcome == "decoded"
    assert growth > 150 * 1024
    # ...refused by the default limit, it costs the file and a header parse.
    outcome, growth = peak_memory_growth_kib(path, max_pixels=Limits().max_pixels)
    assert outcome == "refused"
    assert growth < 8 * 1024


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(png_claiming(100_000, 100_000), id="png-10G-pixels"),
        pytest.param(jpeg_with_size(65_000, 65_000), id="jpeg-4G-pixels"),
        pytest.param(jpeg_with_size(10_000, 6_000), id="jpeg-60M-pixels"),
        pytest.param(gif_with_size(65_535, 65_535), id="gif-4G-pixels"),
    ],
)
def test_headers_claiming_huge_sizes_are_refused(data: bytes) -> None:
    with pytest.raises(TooManyPixels):
        decode_image(data)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_sizes_between_pillows_two_thresholds_are_refused_too() -> None:
    # Pillow warns from 89 M pixels and refuses from 179 M; 120 M is only a warning for Pillow.
    with pytest.raises(TooManyPixels, match="120000000 pixels"):
        decode_image(png_claiming(20_000, 6_000))


def test_the_pixel_limit_is_exact() -> None:
    limits = Limits(max_pixels=100)
    assert decode_image(encode(make_image("RGB", 10, 10, seed=0), "PNG"), PreprocessConfig(limits=limits))
    with pytest.raises(TooManyPixels, match="11×10 = 110 pixels; the limit is 100"):
        decode_image(encode(make_image("RGB", 11, 10, seed=0), "PNG"), PreprocessConfig(limits=limits))


def test_the_byte_limit_is_checked_before_parsing() -> None:
    data = encode(make_image("RGB", 64, 64, seed=0), "BMP")
    config = PreprocessConfig(limits=Limits(max_bytes=len(data) - 1))
    with pytest.raises(InputTooLarge, match=f"{len(data)} bytes; the limit is {len(data) - 1}"):
        decode_image(data, config)
    with pytest.raises(InputTooLarge):
        decode_image(b"not even an image" * 10, PreprocessConfig(limits=Limits(max_bytes=100)))


def test_empty_input_is_not_an_image() -> None:
    with pytest.raises(NotAnImage, match="empty"):
        preprocess_image(b"")


def test_text_is_not_an_image_and_the_message_lists_the_formats() -> None:
    with pytest.raises(NotAnImage, match=r"JPEG, PNG, GIF, WEBP, BMP, TIFF"):
        preprocess_image(b"<html><body>404 Not Found</body></html>")


def test_formats_outside_the_limits_are_refused() -> None:
    ppm = encode(make_image("RGB", 8, 8, seed=0), "PPM")
    with pytest.raises(NotAnImage):
        preprocess_image(ppm)
    assert preprocess_image(ppm, PreprocessConfig(limits=Limits(formats=("PPM",)))).shape == (299, 299, 3)


def test_a_path_or_text_instead_of_bytes_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="preprocess_path"):
        decode_image("photo.jpg")  # type: ignore[arg-type]


def test_a_truncated_jpeg_is_unreadable() -> None:
    data = encode(make_image("RGB", 200, 150, seed=2, kind="smooth"), "JPEG")
    with pytest.raises(UnreadableImage, match="JPEG data is truncated or corrupt"):
        decode_image(data[: len(data) // 2])


def test_header_parsing_alone_decodes_nothing() -> None:
    img = open_image(png_claiming(4000, 3000))  # the pixel data is garbage...
    assert img.size == (4000, 3000)  # ...and never looked at
    with pytest.raises(UnreadableImage):
        decode_image(png_claiming(4000, 3000))


# Valid images of every default format to truncate and corrupt.
SAMPLE_BYTES = [
    encode(make_image("RGB", 48, 40, seed=5, kind="smooth"), "JPEG"),
    encode(make_image("RGB", 48, 40, seed=5, kind="smooth"), "JPEG", progressive=True),
    encode(make_image("RGBA", 48, 40, seed=5, kind="smooth"), "PNG"),
    encode(make_image("P", 48, 40, seed=5, kind="smooth"), "GIF"),
    encode(make_image("RGB", 48, 40, seed=5, kind="smooth"), "WEBP"),
    encode(make_image("RGB", 48, 40, seed=5, kind="smooth"), "BMP"),
    encode(make_image("RGB", 48, 40, seed=5, kind="smooth"), "TIFF", compression="tiff_lzw"),
]
FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decodes_or_refuses(data: bytes) -> None:
    """The contract for any bytes: an array of the target size, or one of the library's errors."""
    try:
        out = preprocess_image(data, SMALL)
    except PreprocessingError:
        return
    assert out.shape == (32, 32, 3)
    assert np.isfinite(out).all()


@FUZZ
@given(st.sampled_from(SAMPLE_BYTES), st.data())
def test_truncated_images_raise_only_library_errors(data: bytes, draw: st.DataObject) -> None:
    decodes_or_refuses(data[: draw.draw(st.integers(0, len(data) - 1))])


@FUZZ
@given(
    st.sampled_from(SAMPLE_BYTES),
    st.lists(st.tuples(st.integers(0), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_corrupted_images_raise_only_library_errors(data: bytes, edits: list[tuple[int, int]]) -> None:
    buf = bytearray(data)
    for position, value in edits:
        buf[position % len(buf)] = value
    decodes_or_refuses(bytes(buf))


@FUZZ
@given(
    st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
                     b"BM", b"II*\x00", b"MM\x00*"]),
    st.binary(max_size=2000),
)
def test_random_bytes_raise_only_library_errors(magic: bytes, tail: bytes) -> None:
    decodes_or_refuses(magic + tail)
