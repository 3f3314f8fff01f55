"""Every input kind round-trips: what TF Serving computes from the export equals the source model."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from clothing_preproc import ModelDescription
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_OUTPUT_NAME
from export.errors import ModelFileError, UnsupportedModel
from export.exporter import export_model
from export.source import load_source
from export.verify import serving_session
from testing_support.sample_models import build_keras2_model


def served(version_dir: Path, images: np.ndarray) -> np.ndarray:
    with serving_session(version_dir) as session:
        return session.predict({COURSE_INPUT_NAME: images})[COURSE_OUTPUT_NAME]


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_files_round_trip(
    suffix: str, tiny_model: keras.Model, tmp_path: Path, images: np.ndarray
) -> None:
    path = tmp_path / f"model{suffix}"
    tiny_model.save(path)

    source = load_source(path)
    version_dir = export_model(source, tmp_path / "models")

    assert source.kind == "keras"
    assert np.array_equal(served(version_dir, images), tiny_model.predict(images, verbose=0))
    assert ModelDescription.load(version_dir).source == path.name


def test_keras2_h5_with_nested_separable_conv_round_trips(
    keras2_h5: Path, tmp_path: Path, images: np.ndarray
) -> None:
    # Keras 3 cannot read this file (keras-team/keras#19441, #19669); the export must.
    with pytest.raises((TypeError, ValueError)):
        keras.models.load_model(keras2_h5, compile=False)

    version_dir = export_model(load_source(keras2_h5), tmp_path)

    original = build_keras2_model()  # the weights written to the file, rebuilt
    assert np.array_equal(served(version_dir, images), original.predict(images, verbose=0))
    reloaded = tf_keras.models.load_model(keras2_h5, compile=False)
    assert np.array_equal(served(version_dir, images), reloaded.predict(images, verbose=0))


def test_a_tf_saved_model_save_export_is_re_exported_servable(
    tiny_model: keras.Model, tmp_path: Path, images: np.ndarray
) -> None:
    # The course's way: TF Serving cannot run what it writes for a Keras 3 model.
    old = tmp_path / "old"
    tf.saved_model.save(tiny_model, str(old))

    version_dir = export_model(load_source(old), tmp_path / "models")

    assert np.array_equal(served(version_dir, images), tiny_model.predict(images, verbose=0))


def test_re_exporting_an_export_keeps_its_description(tiny_model: keras.Model, tmp_path: Path) -> None:
    labels = [f"class {i}" for i in range(10)]
    first = export_model(tiny_model, tmp_path, labels=labels, trained=False, source="mine.keras")

    second = export_model(load_source(first), tmp_path, name="copy")

    description = ModelDescription.load(second)
    assert description.labels == tuple(labels)
    assert description.trained is False
    assert description.source == "mine.keras"
    assert description.model_name == "copy"


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such file"):
        load_source(tmp_path / "absent.h5")


@pytest.mark.parametrize("name", ["model.h5", "model.keras", "model.onnx"])
def test_a_file_that_is_not_a_model_is_reported(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(b"certainly not a model\n")
    with pytest.raises(ModelFileError, match="not a"):
        load_source(path)


def test_a_directory_that_is_not_a_saved_model_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="without saved_model.pb"):
        load_source(tmp_path)


def test_an_unknown_layer_is_reported(tiny_model: keras.Model, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.keras", tmp_path / "bad.keras"
    tiny_model.save(good)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                config["config"]["layers"][1]["class_name"] = "FancyConv"
                config["config"]["layers"][1]["module"] = "fancy.layers"
                data = json.dumps(config).encode()
            dst.writestr(item, data)

    with pytest.raises(UnsupportedModel, match="cannot load the model") as caught:
        load_source(bad)
    assert "\n" not in str(caught.value)
