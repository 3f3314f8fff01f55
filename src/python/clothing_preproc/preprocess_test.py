"""The whole pipeline on bytes, batches and files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clothing_preproc import (
    FAMILY_MODES,
    InputTooLarge,
    Limits,
    NotAnImage,
    PreprocessConfig,
    UnreadableImage,
    decode_image,
    image_to_array,
    normalize_into,
    preprocess_batch,
    preprocess_image,
    preprocess_input,
    preprocess_path,
)
from testing_support.sample_images import encode, make_image, photo_jpeg

IMAGES = [photo_jpeg(320, 240, seed=1), encode(make_image("RGBA", 100, 300, seed=2), "PNG"),
          encode(make_image("P", 299, 299, seed=3), "GIF")]


@pytest.mark.parametrize("family", sorted(FAMILY_MODES))
def test_preprocess_image_is_decode_then_keras_steps(family: str) -> None:
    config = PreprocessConfig(family=family)
    for data in IMAGES:
        stepwise = preprocess_input(image_to_array(decode_image(data, config)), family)
        got = preprocess_image(data, config)
        assert got.dtype == np.float32
        assert got.flags.c_contiguous
        assert np.array_equal(got, stepwise)


def test_xception_output_spans_minus_one_to_one() -> None:
    x = preprocess_image(encode(make_image("RGB", 64, 64, seed=0, kind="extremes"), "PNG"))
    assert set(np.unique(x).tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("family", ["xception", "resnet50", "densenet", "none"])
def test_batch_equals_stacked_images(family: str) -> None:
    config = PreprocessConfig(family=family, target_size=(128, 96))
    batch = preprocess_batch(IMAGES, config)
    assert batch.shape == (3, 128, 96, 3)
    assert batch.dtype == np.float32
    assert batch.flags.c_contiguous
    assert batch.flags.owndata  # one allocation, not a view of a copy
    assert np.array_equal(batch, np.stack([preprocess_image(d, config) for d in IMAGES]))


def test_empty_batch() -> None:
    assert preprocess_batch([], PreprocessConfig(target_size=(8, 8))).shape == (0, 8, 8, 3)


def test_a_bad_image_in_a_batch_is_named_by_position() -> None:
    with pytest.raises(NotAnImage, match=r"^image 2 of 3: not an image"):
        preprocess_batch([IMAGES[0], b"hello", IMAGES[1]])
    with pytest.raises(UnreadableImage, match=r"^image 3 of 3: "):
        preprocess_batch([IMAGES[0], IMAGES[1], IMAGES[0][:500]])


def test_preprocess_path_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "shirt.jpg"
    path.write_bytes(IMAGES[0])
    assert np.array_equal(preprocess_path(path), preprocess_image(IMAGES[0]))
    assert np.array_equal(preprocess_path(str(path)), preprocess_image(IMAGES[0]))


def test_preprocess_path_refuses_big_files_without_reading_them(tmp_path: Path) -> None:
    path = tmp_path / "huge.jpg"
    with path.open("wb") as f:
        f.truncate(10 * 1024 * 1024 * 1024)  # 10 GB, sparse: reading it all would take minutes
    with pytest.raises(InputTooLarge, match="more than 1000 bytes"):
        preprocess_path(path, PreprocessConfig(limits=Limits(max_bytes=1000)))


def test_preprocess_path_of_a_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        preprocess_path(tmp_path / "missing.jpg")


def test_normalize_into_checks_its_arguments() -> None:
    pixels = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        normalize_into(pixels.astype(np.float32), np.empty((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="float32 of shape"):
        normalize_into(pixels, np.empty((4, 4, 3), np.float64))
    with pytest.raises(ValueError, match="channels-last"):
        normalize_into(np.zeros((4, 4), np.uint8), np.empty((4, 4), np.float32))
    with pytest.raises(ValueError, match="unknown preprocessing family"):
        normalize_into(pixels, np.empty((4, 4, 3), np.float32), "alexnet")


def test_preprocess_input_keeps_keras_in_place_semantics() -> None:
    x = np.full((2, 2, 3), 255.0, np.float32)
    assert preprocess_input(x, "xception") is x
    assert (x == 1.0).all()
    y = np.zeros((2, 2, 3), np.float32)
    bgr = preprocess_input(y, "vgg16")
    assert np.shares_memory(bgr, y)  # Keras returns a flipped view for caffe
    assert bgr[0, 0].tolist() == pytest.approx([-103.939, -116.779, -123.68])
    with pytest.raises(TypeError, match="float32"):
        preprocess_input(np.zeros((2, 2, 3), np.float64))
