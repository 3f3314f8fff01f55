"""The library against Keras itself: same bytes in, bit-identical arrays out.

The reference is the training path: `keras.utils.load_img(…, target_size, interpolation,
keep_aspect_ratio)` + `keras.utils.img_to_array` + `keras.applications.<family>.preprocess_input`,
called from the real Keras modules for every family in `FAMILY_MODES`.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from keras.utils import img_to_array, load_img
from PIL import Image

from clothing_preproc import (
    FAMILY_MODES,
    RESIZE_FILTERS,
    Limits,
    PreprocessConfig,
    PreprocessingError,
    decode_image,
    normalize_into,
    preprocess_batch,
    preprocess_image,
    preprocess_input,
)
from clothing_preproc.config import DEFAULT_FORMATS
from testing_support.sample_images import FORMAT_MODES, KINDS, encode, make_image, png16

# Every family, with Keras' own preprocess_input; "none" is the identity.
KERAS_PREPROCESS: dict[str, Callable[[Any], Any]] = {
    family: importlib.import_module(f"keras.applications.{family}").preprocess_input
    for family in FAMILY_MODES
    if family != "none"
}
KERAS_PREPROCESS["none"] = lambda x: x

# Encoders that are slow on big pictures get smaller ones; every format still sees 1-pixel sides.
MAX_SIDE = {
    "WEBP": 1200,
    "GIF": 1200,
    "QOI": 300,
    "JPEG2000": 256,
    "AVIF": 256,
    "DDS": 256,
    "ICO": 256,
    "BLP": 256,
    "ICNS": 64,
}
SLOW_QUANTIZE = {"P", "P+bytes", "P+index", "PA"}


@dataclass(frozen=True)
class Case:
    data: bytes
    fmt: str
    mode: str
    size: tuple[int, int]  # (width, height) as encoded
    config: PreprocessConfig

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        return f"Case({self.fmt} {self.mode} {self.size[0]}×{self.size[1]}, {self.config})"


def save_options(draw: st.DrawFn, fmt: str) -> dict[str, Any]:
    if fmt == "JPEG":
        return {
            "quality": draw(st.integers(1, 100)),
            "progressive": draw(st.booleans()),
            "subsampling": draw(st.sampled_from([0, 1, 2])),
        }
    if fmt == "PNG":
        return {"compress_level": 1}
    if fmt == "WEBP":
        return {"lossless": draw(st.booleans()), "quality": draw(st.integers(1, 100)), "method": 0}
    if fmt == "TIFF":
        return {"compression": draw(st.sampled_from(["raw", "tiff_lzw", "tiff_adobe_deflate", "packbits"]))}
    if fmt == "TGA":
        return {"compression": draw(st.sampled_from([None, "tga_rle"]))}
    return {}


@st.composite
def cases(draw: st.DrawFn, formats: tuple[str, ...] = tuple(FORMAT_MODES)) -> Case:
    fmt = draw(st.sampled_from(formats))
    mode = draw(st.sampled_from(FORMAT_MODES[fmt]))
    usual = st.sampled_from([(299, 299), (224, 224)])
    target = draw(usual | st.tuples(st.integers(1, 400), st.integers(1, 400)))
    max_side = min(MAX_SIDE.get(fmt, 2000), 700 if mode in SLOW_QUANTIZE else 2000)
    exact = st.just((target[1], target[0]))  # exactly the target size: no resize at all
    # Hypothesis favours small numbers; the second branch makes big photos a regular case too.
    side = st.integers(1, max_side) | st.integers(max_side // 2, max_side)
    width, height = draw(exact | st.tuples(side, side))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(KINDS))
    if mode in ("RGB16", "RGBA16"):
        channels = 3 if mode == "RGB16" else 4
        rng = np.random.default_rng(seed)
        data = png16(rng.integers(0, 65536, size=(height, width, channels), dtype=np.uint16))
    else:
        try:
            data = encode(make_image(mode, width, height, seed, kind), fmt, **save_options(draw, fmt))
        except OSError:
            # Pillow's writers refuse some combinations (no run-length TGA for 1-bit images, and
            # "broken data stream" from others at some sizes): nobody can send such a file.
            reject()
    config = PreprocessConfig(
        target_size=target,
        family=draw(st.sampled_from(sorted(FAMILY_MODES))),
        resize_filter=draw(st.sampled_from(["nearest", "nearest", *RESIZE_FILTERS])),
        keep_aspect_ratio=draw(st.booleans()),
        # 16-bit noise does not compress: a big RGBA16 PNG passes the default 20 MiB byte limit,
        # which is not what this test is about (hostile_input_test.py covers the limits).
        limits=Limits(max_bytes=1 << 30, formats=(fmt,)),
    )
    return Case(data, fmt, mode, (width, height), config)


def keras_image(case: Case) -> Image.Image:
    img: Image.Image = load_img(
        io.BytesIO(case.data),
        target_size=case.config.target_size,
        interpolation=case.config.resize_filter,
        keep_aspect_ratio=case.config.keep_aspect_ratio,
    )
    return img


def assert_like_keras(case: Case) -> None:
    try:
        reference = img_to_array(keras_image(case))
    except Exception:  # whatever Keras cannot read, the library must refuse cleanly
        with pytest.raises(PreprocessingError):
            preprocess_image(case.data, case.config)
        return
    decoded = np.asarray(decode_image(case.data, case.config))
    assert decoded.dtype == np.uint8
    assert np.array_equal(decoded, reference.astype(np.uint8)), "decoded pixels differ from load_img"
    # Every family's normalisation on these pixels, and the whole pipeline for the drawn one.
    for family, keras_preprocess in KERAS_PREPROCESS.items():
        expected = keras_preprocess(reference.copy())
        ours = normalize_into(decoded, np.empty(decoded.shape, np.float32), family)
        assert ours.dtype == np.float32
        assert np.array_equal(ours, expected), f"family {family} differs from Keras"
    whole = preprocess_image(case.data, case.config)
    assert np.array_equal(whole, KERAS_PREPROCESS[case.config.family](reference.copy()))


PROPERTY = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


@settings(max_examples=100, **PROPERTY)  # type: ignore[arg-type]
@given(cases(formats=DEFAULT_FORMATS))
def test_default_formats_bit_identical_to_keras(case: Case) -> None:
    assert_like_keras(case)


@settings(max_examples=40, **PROPERTY)  # type: ignore[arg-type]
@given(cases(formats=tuple(f for f in FORMAT_MODES if f not in DEFAULT_FORMATS and f != "ICNS")))
def test_opt_in_formats_bit_identical_to_keras(case: Case) -> None:
    assert_like_keras(case)


PAIRS = [(fmt, mode) for fmt, modes in FORMAT_MODES.items() for mode in modes]


@pytest.mark.parametrize(("fmt", "mode"), PAIRS, ids=[f"{f}-{m}" for f, m in PAIRS])
def test_every_format_and_mode_bit_identical_to_keras(fmt: str, mode: str) -> None:
    # Hypothesis explores; this guarantees each pair is seen on every run, shrunk and enlarged.
    index = PAIRS.index((fmt, mode))
    families = sorted(FAMILY_MODES)
    big = min(640, MAX_SIDE.get(fmt, 640))
    for size, kind in (((157, 91), "noise"), ((big, big * 3 // 4), "smooth")):
        if mode in ("RGB16", "RGBA16"):
            channels = 3 if mode == "RGB16" else 4
            rng = np.random.default_rng(index)
            data = png16(rng.integers(0, 65536, size=(size[1], size[0], channels), dtype=np.uint16))
        else:
            data = encode(make_image(mode, *size, seed=index, kind=kind), fmt)
        config = PreprocessConfig(family=families[index % len(families)], limits=Limits(formats=(fmt,)))
        assert_like_keras(Case(data, fmt, mode, size, config))


@pytest.mark.parametrize("family", sorted(FAMILY_MODES))
def test_every_pixel_value_normalises_like_keras(family: str) -> None:
    # All 256 values in every channel, each channel in a different order, so a channel mix-up or
    # one wrong rounding anywhere shows.
    values = np.arange(256, dtype=np.uint8)
    pixels = np.stack([values, values[::-1], np.roll(values, 85)], axis=-1).reshape(16, 16, 3)
    expected = KERAS_PREPROCESS[family](pixels.astype(np.float32))
    assert np.array_equal(normalize_into(pixels, np.empty(pixels.shape, np.float32), family), expected)
    assert np.array_equal(preprocess_input(pixels.astype(np.float32), family), expected)


def test_batch_equals_keras_images_stacked() -> None:
    config = PreprocessConfig(family="resnet50", target_size=(64, 80))
    images = [
        encode(make_image(mode, 90 + 7 * i, 50 + 11 * i, seed=i, kind="smooth"), fmt)
        for i, (fmt, mode) in enumerate([("JPEG", "RGB"), ("PNG", "RGBA"), ("GIF", "P"), ("WEBP", "RGB")])
    ]
    batch = preprocess_batch(images, config)
    expected = np.stack(
        [
            KERAS_PREPROCESS["resnet50"](img_to_array(load_img(io.BytesIO(data), target_size=(64, 80))))
            for data in images
        ]
    )
    assert batch.shape == (4, 64, 80, 3)
    assert batch.flags.c_contiguous
    assert np.array_equal(batch, expected)
