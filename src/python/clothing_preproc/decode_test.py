"""Decoding and the options beyond the Keras reference: EXIF orientation, alpha, JPEG draft."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from clothing_preproc import Limits, PreprocessConfig, decode_image, preprocess_image
from testing_support.sample_images import encode, exif_with_orientation, make_image, photo_jpeg


def pixels(data: bytes, config: PreprocessConfig | None = None) -> np.ndarray:
    return np.asarray(decode_image(data, config or PreprocessConfig()))


def pillow_resized(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """The reference for anything already RGB: Pillow's nearest resize to (width, height)."""
    return np.asarray(img.convert("RGB").resize(size, Image.Resampling.NEAREST))


# A non-square picture, so every rotation and flip gives a different result.
UPRIGHT = make_image("RGB", 120, 80, seed=11, kind="noise")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_ignored_by_default_as_in_keras(orientation: int) -> None:
    data = encode(UPRIGHT, "PNG", exif=exif_with_orientation(orientation))
    assert np.array_equal(pixels(data), pillow_resized(UPRIGHT, (299, 299)))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_option_shows_the_photo_upright(orientation: int) -> None:
    data = encode(UPRIGHT, "PNG", exif=exif_with_orientation(orientation))
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    got = pixels(data, PreprocessConfig(exif_orientation=True, target_size=(100, 150)))
    assert np.array_equal(got, pillow_resized(expected, (150, 100)))
    if orientation > 1:
        assert not np.array_equal(got, pixels(data, PreprocessConfig(target_size=(100, 150))))


def test_a_corrupt_exif_block_does_not_lose_the_photo() -> None:
    data = encode(UPRIGHT, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    assert pixels(data, PreprocessConfig(exif_orientation=True)).shape == (299, 299, 3)


def rgba_with_alpha(alpha: int) -> Image.Image:
    img = make_image("RGB", 40, 30, seed=3)
    img.putalpha(alpha)
    return img


def test_alpha_is_dropped_by_default_as_in_keras() -> None:
    img = rgba_with_alpha(0)  # fully transparent: Keras still sees the hidden colours
    got = pixels(encode(img, "PNG"), PreprocessConfig(target_size=(30, 40)))
    assert np.array_equal(got, np.asarray(img)[..., :3])


@pytest.mark.parametrize(("alpha", "expect_background"), [(0, True), (255, False)])
def test_background_option_composites_transparency(alpha: int, expect_background: bool) -> None:
    img = rgba_with_alpha(alpha)
    got = pixels(encode(img, "PNG"), PreprocessConfig(target_size=(30, 40), background=(255, 255, 255)))
    expected = np.full((30, 40, 3), 255, np.uint8) if expect_background else np.asarray(img)[..., :3]
    assert np.array_equal(got, expected)


def test_background_blends_half_transparent_pixels() -> None:
    img = Image.new("RGBA", (4, 4), (200, 100, 0, 128))
    got = pixels(encode(img, "PNG"), PreprocessConfig(target_size=(4, 4), background=(0, 0, 255)))
    assert np.abs(got.astype(int) - [100, 50, 127]).max() <= 1


@pytest.mark.parametrize(
    ("mode", "fmt"), [("P+index", "GIF"), ("P+bytes", "PNG"), ("LA", "PNG"), ("PA", "TIFF")]
)
def test_background_applies_to_every_kind_of_transparency(mode: str, fmt: str) -> None:
    data = encode(make_image(mode, 50, 40, seed=4), fmt)
    dropped = pixels(data, PreprocessConfig(target_size=(40, 50)))
    composited = pixels(data, PreprocessConfig(target_size=(40, 50), background=(1, 2, 3)))
    assert not np.array_equal(dropped, composited)


def test_background_leaves_opaque_images_alone() -> None:
    for data in (encode(make_image("RGB", 64, 48, seed=5), "PNG"), photo_jpeg(64, 48)):
        assert np.array_equal(pixels(data), pixels(data, PreprocessConfig(background=(0, 0, 0))))


def test_draft_decodes_big_jpegs_at_reduced_scale_close_to_the_reference() -> None:
    data = photo_jpeg(2400, 1800, seed=7)
    exact = pixels(data).astype(np.int16)
    fast = pixels(data, PreprocessConfig(draft=True)).astype(np.int16)
    assert fast.shape == exact.shape == (299, 299, 3)
    assert not np.array_equal(fast, exact)  # 1/4 scale: not the same pixels...
    assert np.abs(fast - exact).mean() < 6  # ...but the same picture (smooth content)


def test_draft_changes_nothing_when_no_reduction_fits() -> None:
    # 500×400 cannot be halved and still cover 299×299: libjpeg decodes at full scale.
    data = photo_jpeg(500, 400, seed=8)
    assert np.array_equal(pixels(data), pixels(data, PreprocessConfig(draft=True)))


def test_draft_changes_nothing_for_other_formats() -> None:
    data = encode(make_image("RGB", 1600, 1200, seed=9, kind="smooth"), "PNG")
    assert np.array_equal(pixels(data), pixels(data, PreprocessConfig(draft=True)))


def test_draft_plans_for_the_rotated_picture() -> None:
    # Stored 2400×600, shown 600×2400 after EXIF rotation; target 600 wide × 150 tall. Planned on
    # the stored orientation, libjpeg would decode at 1/4 (600×150, shown 150×600) and the width
    # would be upscaled 4×; planned on the shown one, no reduction covers the target, so the
    # result is the exact one.
    data = encode(make_image("RGB", 2400, 600, seed=6, kind="noise"), "JPEG", exif=exif_with_orientation(6))
    exact = pixels(data, PreprocessConfig(target_size=(150, 600), exif_orientation=True))
    fast = pixels(data, PreprocessConfig(target_size=(150, 600), exif_orientation=True, draft=True))
    assert np.array_equal(fast, exact)


def test_first_frame_of_an_animated_gif() -> None:
    frames = [make_image("RGB", 30, 20, seed=s).convert("P") for s in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    got = pixels(out.getvalue(), PreprocessConfig(target_size=(20, 30)))
    assert np.array_equal(got, np.asarray(frames[0].convert("RGB")))


def test_16_bit_grayscale_is_clipped_as_keras_does() -> None:
    values = np.array([[0, 100, 255, 256, 40000, 65535]], dtype=np.uint16)
    got = pixels(encode(Image.fromarray(values), "PNG"), PreprocessConfig(target_size=(1, 6)))
    assert got[0, :, 0].tolist() == [0, 100, 255, 255, 255, 255]


def test_cmyk_jpeg_decodes_to_rgb() -> None:
    data = encode(make_image("CMYK", 64, 48, seed=12), "JPEG")
    assert preprocess_image(data).shape == (299, 299, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"family": "alexnet"}, "unknown preprocessing family 'alexnet'"),
        ({"resize_filter": "cubic"}, "unknown resize filter 'cubic'"),
        ({"target_size": (0, 299)}, "out of range"),
        ({"target_size": (299, 9000)}, "out of range"),
        ({"background": (0, 0, 256)}, "background"),
    ],
)
def test_bad_settings_fail_when_built(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PreprocessConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_bytes": 0}, "max_bytes"),
        ({"max_pixels": -1}, "max_pixels"),
        ({"formats": ()}, "at least one"),
        ({"formats": ("JPEG", "HEIC")}, "Pillow cannot read HEIC"),
    ],
)
def test_bad_limits_fail_when_built(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Limits(**kwargs)  # type: ignore[arg-type]
