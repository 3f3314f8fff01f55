"""Test images in every mode and format Pillow writes, made from a seed (test-only helpers).

`make_image` builds a Pillow image of a given mode from seeded random content; `encode` writes it
in a format with format-specific options; `png16` writes the 16-bit-per-channel PNGs Pillow
cannot save itself. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

# Content kinds: uniform noise, a smooth photo-like field, one flat colour, only 0 and 255.
KINDS = ("noise", "smooth", "flat", "extremes")

# Modes `make_image` builds. "P+bytes"/"P+index" are palette images with per-entry alpha (PNG's
# tRNS) or one transparent index (GIF's); "RGB16"/"RGBA16" exist only as PNG bytes (`png16`).
MODES = ("1", "L", "LA", "P", "P+bytes", "P+index", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB",
         "I;16", "I", "F")

# The (format, mode) pairs Pillow 11-12 can write and read back, by format.
FORMAT_MODES: dict[str, tuple[str, ...]] = {
    "JPEG": ("1", "L", "RGB", "CMYK", "YCbCr"),
    "PNG": ("1", "L", "LA", "P", "P+bytes", "P+index", "RGB", "RGBA", "I;16", "I", "RGB16", "RGBA16"),
    "GIF": ("1", "L", "P", "P+index", "RGB", "RGBA"),
    "WEBP": ("L", "LA", "P", "RGB", "RGBA"),
    "BMP": ("1", "L", "RGB", "RGBA"),
    "TIFF": ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "LAB"),
    # Formats outside the default `Limits.formats`, readable once allowed.
    "PPM": ("1", "L", "RGB", "I;16", "I", "F"),
    "TGA": ("1", "L", "LA", "P", "RGB", "RGBA"),
    "PCX": ("1", "L", "P", "RGB"),
    "SGI": ("L", "RGB", "RGBA"),
    "IM": ("1", "L", "LA", "RGB", "RGBA", "CMYK", "I;16", "I", "F"),
    "QOI": ("RGB", "RGBA"),
    "JPEG2000": ("L", "LA", "RGB", "RGBA", "I;16"),
    "AVIF": ("L", "RGB", "RGBA"),
    "DDS": ("L", "LA", "RGB", "RGBA"),
    "ICO": ("P", "RGB", "RGBA"),
    "BLP": ("P",),
    "ICNS": ("RGB", "RGBA"),
    "MSP": ("1",),
    "XBM": ("1",),
    "SPIDER": ("L", "F"),
}


def pixels(
    rng: np.random.Generator, height: int, width: int, channels: int, kind: str
) -> npt.NDArray[np.uint8]:
    """(height, width, channels) uint8 content of a kind."""
    shape = (height, width, channels)
    if kind == "noise":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    if kind == "flat":
        return np.broadcast_to(rng.integers(0, 256, size=channels, dtype=np.uint8), shape).copy()
    if kind == "extremes":
        return (rng.integers(0, 2, size=shape, dtype=np.uint8) * 255).astype(np.uint8)
    if kind == "smooth":
        return smooth_field(rng, height, width, channels)
    raise ValueError(f"unknown content kind {kind!r}")


def smooth_field(rng: np.random.Generator, height: int, width: int, channels: int) -> npt.NDArray[np.uint8]:
    """Photo-like content: a few random low-frequency waves per channel plus mild grain."""
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    out = np.empty((height, width, channels), dtype=np.uint8)
    for c in range(channels):
        field = np.full((height, width), rng.uniform(60, 190), dtype=np.float32)
        for _ in range(4):
            fy, fx = rng.uniform(0.5, 6.0, size=2)
            phase = rng.uniform(0, 2 * np.pi)
            amp = rng.uniform(10, 40)
            field += amp * np.sin(2 * np.pi * (fy * y + fx * x) + phase).astype(np.float32)
        field += rng.normal(0.0, 4.0, size=(height, width)).astype(np.float32)
        out[..., c] = np.clip(field, 0, 255).astype(np.uint8)
    return out


def make_image(mode: str, width: int, height: int, seed: int, kind: str = "noise") -> Image.Image:
    """A `width`×`height` image of `mode` (one of `MODES`) with seeded content of `kind`."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(pixels(rng, height, width, 3, kind), "RGB")
    alpha = Image.fromarray(pixels(rng, height, width, 1, kind)[..., 0], "L")
    if mode in ("RGB", "L", "1", "CMYK", "YCbCr"):
        return rgb.convert(mode)
    if mode == "RGBA":
        img = rgb.copy()
        img.putalpha(alpha)
        return img
    if mode == "LA":
        img = rgb.convert("L")
        img.putalpha(alpha)
        return img
    if mode in ("P", "P+bytes", "P+index"):
        img = rgb.quantize(colors=int(rng.integers(2, 257)))
        colours = len(img.getpalette() or []) // 3
        if mode == "P+bytes":
            img.info["transparency"] = bytes(rng.integers(0, 256, size=max(colours, 1), dtype=np.uint8))
        elif mode == "P+index":
            img.info["transparency"] = int(rng.integers(0, max(colours, 1)))
        return img
    if mode == "PA":
        img = rgb.quantize(colors=int(rng.integers(2, 257))).convert("PA")
        img.putalpha(alpha)
        return img
    if mode == "LAB":
        return Image.fromarray(pixels(rng, height, width, 3, kind), "LAB")
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, size=(height, width), dtype=np.uint16))  # I;16
    if mode == "I":
        # Outside 0..255 on both sides, so the conversion's clipping is exercised.
        return Image.fromarray(rng.integers(-70000, 70000, size=(height, width), dtype=np.int32), "I")
    if mode == "F":
        return Image.fromarray(rng.uniform(-100.0, 400.0, size=(height, width)).astype(np.float32), "F")
    raise ValueError(f"unknown mode {mode!r}")


def encode(img: Image.Image, fmt: str, **params: Any) -> bytes:
    """The image saved in `fmt` (Pillow's name) with Pillow save options `params`."""
    out = io.BytesIO()
    with warnings.catch_warnings():
        # Pillow notes lossy conversions (e.g. saving a palette with per-entry alpha); the test
        # compares against what Pillow reads back, so the notes are expected.
        warnings.simplefilter("ignore")
        if "transparency" in img.info and "transparency" not in params and fmt in ("PNG", "GIF"):
            params["transparency"] = img.info["transparency"]
        img.save(out, format=fmt, **params)
    return out.getvalue()


def png16(array: npt.NDArray[np.uint16]) -> bytes:
    """A 16-bit PNG of a (h, w, 3) RGB or (h, w, 4) RGBA uint16 array (Pillow cannot write these)."""
    height, width, channels = array.shape
    colour_type = {3: 2, 4: 6}[channels]
    rows = array.astype(">u2").reshape(height, width * channels).view(np.uint8)
    raw = np.hstack([np.zeros((height, 1), dtype=np.uint8), rows]).tobytes()  # filter 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 1))
        + chunk(b"IEND", b"")
    )


def exif_with_orientation(orientation: int) -> bytes:
    """An EXIF block holding only the Orientation tag (1-8)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def photo_jpeg(width: int, height: int, seed: int = 0, quality: int = 90, **params: Any) -> bytes:
    """A smooth, photo-like RGB JPEG (what phones upload), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(smooth_field(rng, height, width, 3), "RGB")
    return encode(img, "JPEG", quality=quality, **params)
