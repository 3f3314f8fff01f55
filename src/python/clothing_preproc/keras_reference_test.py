"""The library against Keras itself: same pixels in, bit-identical arrays out."""

from __future__ import annotations

import io

import numpy as np
import pytest
from keras.applications import imagenet_utils
from keras.utils import img_to_array, load_img
from PIL import Image

from clothing_preproc import PreprocessConfig, preprocess_image

KERAS_MODE = {"xception": "tf", "resnet50": "caffe", "densenet": "torch"}


def keras_reference(data: bytes, family: str, size: tuple[int, int]) -> np.ndarray:
    img = load_img(io.BytesIO(data), target_size=size)
    x = img_to_array(img)
    return imagenet_utils.preprocess_input(x, mode=KERAS_MODE[family])


def encode(img: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize("family", sorted(KERAS_MODE))
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_bit_identical_to_keras(family: str, mode: str) -> None:
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(173, 241, 3), dtype=np.uint8)
    img = Image.fromarray(pixels, "RGB").convert(mode)
    data = encode(img, "PNG")
    ours = preprocess_image(data, PreprocessConfig(family=family, target_size=(299, 299)))
    assert ours.dtype == np.float32
    assert np.array_equal(ours, keras_reference(data, family, (299, 299)))
