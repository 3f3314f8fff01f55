"""export_model: what TF Serving and the course gateway see in the directory it writes."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from clothing_preproc import CLOTHING_LABELS, ModelDescription, preprocess_input
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_MODEL_NAME, COURSE_OUTPUT_NAME
from export.errors import BadOption, UnsupportedModel, VerificationFailed, VersionExists
from export.exporter import export_model
from export.verify import serving_session
from export.warmup import WARMUP_FILE


def test_default_export_has_the_course_interface(tiny_model: keras.Model, tmp_path: Path) -> None:
    version_dir = export_model(tiny_model, tmp_path, trained=False)

    assert version_dir == tmp_path / COURSE_MODEL_NAME / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "variables" / "variables.index").is_file()
    with serving_session(version_dir) as served:
        sig = served.signatures["serving_default"]
        assert sig.method_name == "tensorflow/serving/predict"
        assert list(sig.inputs) == [COURSE_INPUT_NAME]
        assert list(sig.outputs) == [COURSE_OUTPUT_NAME]
        assert [d.size for d in sig.inputs[COURSE_INPUT_NAME].tensor_shape.dim] == [-1, 299, 299, 3]
        assert [d.size for d in sig.outputs[COURSE_OUTPUT_NAME].tensor_shape.dim] == [-1, 10]
    description = ModelDescription.load(version_dir)
    assert description.model_name == COURSE_MODEL_NAME
    assert description.labels == CLOTHING_LABELS
    assert description.trained is False
    assert description.inputs[COURSE_INPUT_NAME].shape == (-1, 299, 299, 3)
    assert description.outputs[COURSE_OUTPUT_NAME].shape == (-1, 10)


def test_course_gateway_request_is_answered(tiny_model: keras.Model, tmp_path: Path) -> None:
    # The course gateway's request, built with TF Serving's own client library.
    version_dir = export_model(tiny_model, tmp_path)
    image = np.random.default_rng(3).uniform(-1, 1, size=(1, 299, 299, 3)).astype(np.float32)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = COURSE_MODEL_NAME
    request.model_spec.signature_name = "serving_default"
    request.inputs[COURSE_INPUT_NAME].CopyFrom(tf.make_tensor_proto(image, shape=image.shape))

    assert version_dir.parent.name == request.model_spec.name
    with serving_session(version_dir) as served:
        inputs = {alias: tf.make_ndarray(t) for alias, t in request.inputs.items()}
        outputs = served.predict(inputs, request.model_spec.signature_name)
    assert np.array_equal(outputs[COURSE_OUTPUT_NAME], tiny_model.predict(image, verbose=0))


def test_warmup_records_are_predict_logs_tf_serving_reads(tiny_model: keras.Model, tmp_path: Path) -> None:
    version_dir = export_model(tiny_model, tmp_path, name="shop")

    records = list(tf.data.TFRecordDataset(str(version_dir / WARMUP_FILE)))
    assert 2 <= len(records) <= 1000
    by_signature: dict[str, list[np.ndarray]] = {}
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == "shop"
        (alias,) = request.inputs
        batch = tf.make_ndarray(request.inputs[alias])
        assert batch.shape == (1, 299, 299, 3)
        by_signature.setdefault(f"{request.model_spec.signature_name}:{alias}", []).append(batch)
    # Every sample image warms up both signatures, the way a gateway would call them.
    assert set(by_signature) == {f"serving_default:{COURSE_INPUT_NAME}", "pixels:pixels"}
    floats, pixels = by_signature[f"serving_default:{COURSE_INPUT_NAME}"], by_signature["pixels:pixels"]
    assert len(floats) == len(pixels)
    for f, p in zip(floats, pixels, strict=True):
        assert f.dtype == np.float32
        assert p.dtype == np.uint8
        # The same image: preprocessed the Xception way, [-1, 1].
        assert np.array_equal(f, preprocess_input(p.astype(np.float32), "xception"))


@pytest.mark.parametrize("family", ["xception", "resnet50", "densenet"])
def test_the_pixels_signature_answers_exactly_as_the_float32_one(
    tiny_model: keras.Model, tmp_path: Path, family: str
) -> None:
    # One family per normalisation (tf, caffe, torch): the graph does it, the client does not.
    version_dir = export_model(tiny_model, tmp_path, family=family)
    pixels = np.random.default_rng(5).integers(0, 256, size=(3, 299, 299, 3), dtype=np.uint8)

    with serving_session(version_dir) as served:
        sig = served.signatures["pixels"]
        assert sig.method_name == "tensorflow/serving/predict"
        assert list(sig.inputs) == ["pixels"]
        assert sig.inputs["pixels"].dtype == tf.uint8.as_datatype_enum
        assert [d.size for d in sig.inputs["pixels"].tensor_shape.dim] == [-1, 299, 299, 3]
        assert list(sig.outputs) == [COURSE_OUTPUT_NAME]
        from_pixels = served.predict({"pixels": pixels}, "pixels")[COURSE_OUTPUT_NAME]
        normalised = np.ascontiguousarray(preprocess_input(pixels.astype(np.float32), family))
        from_floats = served.predict({COURSE_INPUT_NAME: normalised})[COURSE_OUTPUT_NAME]
    assert np.array_equal(from_pixels, from_floats)
    assert np.array_equal(from_pixels, tiny_model.predict(normalised, verbose=0))


def test_a_pixels_signature_that_normalises_differently_is_not_written(
    tiny_model: keras.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # x * (1 / 127.5) - 1 instead of x / 127.5 - 1: off in the last bit for 111 of 256 values.
    monkeypatch.setattr(
        "export.exporter.normalise_pixels", lambda x, family: tf.cast(x, tf.float32) * (1 / 127.5) - 1
    )
    with pytest.raises(VerificationFailed, match="the \"pixels\" signature answers differently"):
        export_model(tiny_model, tmp_path)
    assert not (tmp_path / COURSE_MODEL_NAME / "1").exists()


def test_names_are_chosen_by_the_caller(tiny_model: keras.Model, tmp_path: Path, images: np.ndarray) -> None:
    version_dir = export_model(tiny_model, tmp_path, input_name="pixels", output_name="scores")

    with serving_session(version_dir) as served:
        outputs = served.predict({"pixels": images})
    assert list(outputs) == ["scores"]
    assert np.array_equal(outputs["scores"], tiny_model.predict(images, verbose=0))


def test_versions_count_up_and_are_never_overwritten_silently(
    tiny_model: keras.Model, tmp_path: Path
) -> None:
    first = export_model(tiny_model, tmp_path, warmup=False)
    second = export_model(tiny_model, tmp_path, warmup=False)
    assert (first.name, second.name) == ("1", "2")

    with pytest.raises(VersionExists, match="--overwrite"):
        export_model(tiny_model, tmp_path, version=1)
    assert not (first / WARMUP_FILE).exists()  # untouched

    replaced = export_model(tiny_model, tmp_path, version=1, overwrite=True)
    assert replaced == first
    assert (first / WARMUP_FILE).is_file()
    assert sorted(p.name for p in (tmp_path / COURSE_MODEL_NAME).iterdir()) == ["1", "2"]


def test_a_model_whose_input_is_not_an_image_is_refused(tmp_path: Path) -> None:
    inputs = keras.Input((20,))
    model = keras.Model(inputs, keras.layers.Dense(10)(inputs))

    with pytest.raises(UnsupportedModel, match=r"input has shape \(None, 20\).*\(batch, height, width, 3\)"):
        export_model(model, tmp_path)
    assert not (tmp_path / COURSE_MODEL_NAME).exists()


def test_labels_must_match_the_outputs(tiny_model: keras.Model, tmp_path: Path) -> None:
    with pytest.raises(BadOption, match="10 scores but there are 3 labels"):
        export_model(tiny_model, tmp_path, labels=["a", "b", "c"])


@keras.saving.register_keras_serializable(package="export_test")
class _Noise(keras.layers.Layer):  # type: ignore[misc]  # Keras ships no type information
    """Adds fresh noise on every call: a model whose export can never match it."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x + tf.random.uniform(tf.shape(x))


def test_a_failure_mid_export_leaves_no_version_directory(tmp_path: Path) -> None:
    inputs = keras.Input((299, 299, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, _Noise()(keras.layers.Dense(10)(x)))
    export_model(model, tmp_path, version=1, verify=False)  # an earlier version stays as it was
    before = sorted(p.name for p in (tmp_path / COURSE_MODEL_NAME).iterdir())

    # Verification runs after the SavedModel, description and warmup records were written.
    with pytest.raises(VerificationFailed, match="differ from the model's"):
        export_model(model, tmp_path)

    assert sorted(p.name for p in (tmp_path / COURSE_MODEL_NAME).iterdir()) == before == ["1"]
