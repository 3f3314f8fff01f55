"""Small SavedModels for the server's tests and benchmarks, written with TensorFlow directly.

- `write_image_model`: the clothing model's interface (input_8 (-1,299,299,3) float32 → dense_7
  (-1,10)), a tiny CNN, exported the way TF Serving can load it (keras.export.ExportArchive
  without track(): weights once, chosen names). `seed` changes the weights, so two versions give
  different outputs.
- `write_xception_model`: the same interface on Keras' Xception architecture (random weights),
  for throughput measurements.
- `write_two_input_model`: two inputs of different dtypes and two outputs, for multi-input calls.
- `write_half_plus_two`: TF Serving's own test model (predict, classify and regress signatures on
  serialized tf.Examples), for the Classify/Regress/MultiInference APIs and TF Serving's REST forms.
- `write_plain_saved_model`: `tf.saved_model.save(keras_model)`, which TF Serving cannot serve.
- `build_keras2_model`: a Keras 2 (tf_keras) model shaped like the course's, every weight random,
  for the export tool's loading of Keras 2 files.
- `write_warmup`, `write_warmup_logs`: an assets.extra/tf_serving_warmup_requests file (Predict
  records from inputs, or any PredictionLog records).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf
import tf_keras

from clothing_preproc import array_to_tensor_proto
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_OUTPUT_NAME
from clothing_protos import serving_pb2

IMAGE_SHAPE = (299, 299, 3)


def _export(fn: Any, signature: list[tf.TensorSpec], path: Path) -> Path:
    import keras

    # Without track(): the endpoint's tf.function captures the weights, stored once
    # (toolchain.md §3), under the names the signature gives.
    archive = keras.export.ExportArchive()
    archive.add_endpoint("serving_default", tf.function(fn), input_signature=signature)
    archive.write_out(str(path), verbose=False)
    return path


def tiny_keras_model(seed: int = 0, image_shape: Sequence[int] = IMAGE_SHAPE) -> Any:
    import keras

    keras.utils.set_random_seed(seed)
    image = keras.Input(tuple(image_shape), name=COURSE_INPUT_NAME)
    x = keras.layers.Conv2D(4, 3, strides=8, activation="relu")(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(10, name=COURSE_OUTPUT_NAME)(x)
    return keras.Model(image, logits)


def write_image_model(version_dir: Path, seed: int = 0) -> Path:
    model = tiny_keras_model(seed)
    spec = [tf.TensorSpec((None, *IMAGE_SHAPE), tf.float32, name=COURSE_INPUT_NAME)]
    return _export(lambda x: {COURSE_OUTPUT_NAME: model(x, training=False)}, spec, version_dir)


def write_xception_model(version_dir: Path, seed: int = 0) -> Path:
    import keras

    keras.utils.set_random_seed(seed)
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=IMAGE_SHAPE)
    image = keras.Input(IMAGE_SHAPE, name=COURSE_INPUT_NAME)
    x = keras.layers.GlobalAveragePooling2D()(base(image, training=False))
    x = keras.layers.Dense(100, activation="relu")(x)
    model = keras.Model(image, keras.layers.Dense(10, name=COURSE_OUTPUT_NAME)(x))
    spec = [tf.TensorSpec((None, *IMAGE_SHAPE), tf.float32, name=COURSE_INPUT_NAME)]
    return _export(lambda x: {COURSE_OUTPUT_NAME: model(x, training=False)}, spec, version_dir)


def write_two_input_model(version_dir: Path) -> Path:
    """Inputs `a` float32 (-1, 3) and `b` int64 (-1,); outputs `sum` = a·1 + b, `scaled` = 2a."""
    def fn(a: tf.Tensor, b: tf.Tensor) -> dict[str, tf.Tensor]:
        total = tf.reduce_sum(a, axis=1) + tf.cast(b, tf.float32)
        return {"sum": total, "scaled": a * 2.0}

    spec = [tf.TensorSpec((None, 3), tf.float32, name="a"), tf.TensorSpec((None,), tf.int64, name="b")]
    return _export(fn, spec, version_dir)


def write_half_plus_two(version_dir: Path, b: float = 2.0) -> Path:
    """TF Serving's own test model, rebuilt: y = 0.5·x + b from serialized tf.Examples.

    As in TF Serving's testdata (`saved_model_half_plus_two`, `…_half_plus_three` with b=3), a
    TF1 graph: `tf_example` (a string placeholder [-1]) is parsed for `x` (float [1]) and `x2`
    (float [1], default 0); `x` is an Identity of the parsed value, signed [-1,1]. Signatures:
    `serving_default` (predict x → y), `regress_x_to_y`, `regress_x_to_y2` (0.5·x + 3),
    `regress_x2_to_y3` (reads `x2`, a float input: not a regression input TF Serving can feed),
    `classify_x_to_y` (scores = y) and `classify_x_to_labels` (classes = y as text, scores = y).
    """
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        a = v1.Variable(0.5, name="a")
        offset = v1.Variable(b, name="b")
        c = v1.Variable(3.0, name="c")
        examples = v1.placeholder(tf.string, shape=[None], name="tf_example")
        parsed = v1.io.parse_example(
            examples,
            {
                "x": v1.io.FixedLenFeature([1], tf.float32),
                "x2": v1.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
            },
        )
        x = tf.identity(parsed["x"], name="x")
        x2 = tf.identity(parsed["x2"], name="x2")
        y = tf.identity(a * x + offset, name="y")
        y2 = tf.identity(a * x + c, name="y2")
        y3 = tf.identity(a * x2 + c, name="y3")
        labels = tf.identity(tf.strings.as_string(y), name="labels")
        info = v1.saved_model.utils.build_tensor_info
        build = v1.saved_model.signature_def_utils.build_signature_def

        def regress(inputs: tf.Tensor, outputs: tf.Tensor) -> Any:
            return build({"inputs": info(inputs)}, {"outputs": info(outputs)}, "tensorflow/serving/regress")

        def classify(inputs: tf.Tensor, **outputs: tf.Tensor) -> Any:
            return build(
                {"inputs": info(inputs)},
                {k: info(v) for k, v in outputs.items()},
                "tensorflow/serving/classify",
            )

        signatures = {
            "serving_default": build({"x": info(x)}, {"y": info(y)}, "tensorflow/serving/predict"),
            "regress_x_to_y": regress(examples, y),
            "regress_x_to_y2": regress(examples, y2),
            "regress_x2_to_y3": regress(x2, y3),
            "classify_x_to_y": classify(examples, scores=y),
            "classify_x_to_labels": classify(examples, classes=labels, scores=y),
        }
        session.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(version_dir))
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
        builder.save()
    return version_dir


def write_plain_saved_model(version_dir: Path) -> Path:
    """`tf.saved_model.save(keras_model)`: loads, then fails at run time in TF1 sessions (TF Serving)."""
    tf.saved_model.save(tiny_keras_model(0), str(version_dir))
    return version_dir


def write_warmup(version_dir: Path, inputs: Sequence[dict[str, npt.NDArray[Any]]], model_name: str) -> Path:
    logs = []
    for request_inputs in inputs:
        log = serving_pb2.PredictionLog()
        log.predict_log.request.model_spec.name = model_name
        log.predict_log.request.model_spec.signature_name = "serving_default"
        for alias, array in request_inputs.items():
            log.predict_log.request.inputs[alias].CopyFrom(array_to_tensor_proto(array))
        logs.append(log)
    return write_warmup_logs(version_dir, logs)


def write_warmup_logs(version_dir: Path, logs: Sequence[serving_pb2.PredictionLog]) -> Path:
    """Any PredictionLog records (predict, classify, regress, multi-inference) as the warmup file."""
    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def run_saved_model(version_dir: Path, inputs: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    """The reference: the SavedModel's serving signature run directly with TensorFlow."""
    loaded = tf.saved_model.load(str(version_dir))
    outputs = loaded.signatures["serving_default"](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in outputs.items()}


def random_images(count: int, seed: int = 0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=(count, *IMAGE_SHAPE)).astype(np.float32)


def build_keras2_model(seed: int = 0) -> Any:
    """A Keras 2 (tf_keras) model shaped like the course's: a nested base model with
    SeparableConv2D and BatchNormalization, then GAP, Dense(100), Dropout, Dense(10) logits;
    every weight random, so a wrong load or export shows in the outputs."""
    layers = tf_keras.layers
    base_in = layers.Input((299, 299, 3))
    x = layers.SeparableConv2D(8, 3, strides=4, use_bias=False)(base_in)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    base = tf_keras.Model(base_in, x, name="xception_like")
    base.trainable = False
    inputs = layers.Input((299, 299, 3))
    y = base(inputs, training=False)
    y = layers.GlobalAveragePooling2D()(y)
    y = layers.Dense(100, activation="relu")(y)
    y = layers.Dropout(0.2)(y)
    outputs = layers.Dense(10)(y)
    model = tf_keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    model.set_weights(
        [
            rng.uniform(0.5, 1.5, size=w.shape).astype(np.float32)
            if "moving_variance" in v.name
            else rng.normal(0.0, 0.3, size=w.shape).astype(np.float32)
            for v, w in zip(model.weights, model.get_weights(), strict=True)
        ]
    )
    return model
