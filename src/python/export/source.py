"""The model to export, whatever it was saved as, reduced to one inference-mode forward pass.

Accepted: a Keras model object, a `.keras` file, a `.h5` written by Keras 3, a `.h5` written by
Keras 2 / tf.keras (like the course's `xception_v4_large_08_0.894.h5`), and a SavedModel directory
(to re-export it, for instance a `tf.saved_model.save` export that TF Serving cannot load).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import keras
import tensorflow as tf

from clothing_preproc import DEFAULT_SIGNATURE, ModelDescription
from export.errors import ModelFileError, UnsupportedModel, one_line

Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class SourceModel:
    """A loaded model: its forward pass (batch -> scores) and the shapes the model declares."""

    call: Callable[[tf.Tensor], tf.Tensor]
    input_shape: Shape
    input_dtype: str
    output_shape: Shape
    # Where it came from: "keras", "tf_keras" or "saved_model", and the file's name.
    kind: str
    source: str = ""
    # A SavedModel written by this tool carries its description; a re-export keeps its labels.
    description: ModelDescription | None = None
    # The loaded object whose variables `call` uses; kept alive as long as this value is.
    owner: Any = None


def from_keras(model: Any, source: str = "") -> SourceModel:
    """Wrap an in-memory model (Keras 3 or tf_keras) with one input and one output."""
    kind = "tf_keras" if type(model).__module__.startswith("tf_keras") else "keras"
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):
        raise UnsupportedModel(
            "the model has no defined inputs (a subclassed model that was never built); "
            "save it as a functional or sequential model"
        ) from None
    if len(inputs) != 1:
        raise UnsupportedModel(f"the model has {len(inputs)} inputs; an image classifier has one")
    if len(outputs) != 1:
        raise UnsupportedModel(f"the model has {len(outputs)} outputs; an image classifier has one")

    def call(x: tf.Tensor) -> tf.Tensor:
        return model(x, training=False)

    return SourceModel(
        call=call,
        input_shape=_shape(inputs[0].shape),
        input_dtype=_dtype_name(inputs[0].dtype),
        output_shape=_shape(outputs[0].shape),
        kind=kind,
        source=source,
        owner=model,
    )


def load_source(path: str | Path) -> SourceModel:
    """Load a `.keras` or `.h5` file or a SavedModel directory."""
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"{p}: no such file or directory")
    if p.is_dir():
        return _load_saved_model(p)
    suffix = p.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return _load_h5(p)
    if suffix == ".keras":
        return _load_keras_zip(p)
    raise ModelFileError(f"{p}: not a model file (expected .keras, .h5 or a SavedModel directory)")


def _load_keras_zip(path: Path) -> SourceModel:
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a Keras model file (a .keras file is a zip archive)")
    model = _keras_load(lambda: keras.models.load_model(path, compile=False), path)
    return from_keras(model, path.name)


def _load_h5(path: Path) -> SourceModel:
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
    except OSError:
        raise ModelFileError(f"{path}: not an HDF5 file") from None
    if "model_config" not in attrs:
        raise ModelFileError(f"{path}: the HDF5 file holds no model configuration (weights only?)")
    version = attrs.get("keras_version", b"")
    version = version.decode() if isinstance(version, bytes) else str(version)
    if version.startswith("3."):
        model = _keras_load(lambda: keras.models.load_model(path, compile=False), path)
    else:
        # Keras 3 cannot read Keras 2 files holding Xception: SeparableConv2D's saved config has
        # arguments Keras 3 refuses (keras-team/keras#19441) and a nested base model is called at
        # node index 1 (keras-team/keras#19669). tf_keras reads them as written, bit for bit.
        import tf_keras

        model = _keras_load(lambda: tf_keras.models.load_model(path, compile=False), path)
    return from_keras(model, path.name)


def _keras_load(load: Callable[[], Any], path: Path) -> Any:
    try:
        return load()
    except (TypeError, ValueError, KeyError, AttributeError, NotImplementedError) as e:
        # Unknown or custom layers, configs a Keras version cannot read.
        raise UnsupportedModel(f"{path}: cannot load the model: {one_line(e)}") from e
    except (OSError, zipfile.BadZipFile) as e:
        raise ModelFileError(f"{path}: cannot read the model: {one_line(e)}") from e


def _load_saved_model(path: Path) -> SourceModel:
    if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
        raise ModelFileError(f"{path}: a directory without saved_model.pb is not a SavedModel")
    try:
        loaded = tf.saved_model.load(str(path))
    except (tf.errors.OpError, ValueError, OSError) as e:
        raise ModelFileError(f"{path}: cannot load the SavedModel: {one_line(e)}") from e
    signatures = dict(loaded.signatures)
    if DEFAULT_SIGNATURE in signatures:
        name = DEFAULT_SIGNATURE
    elif len(signatures) == 1:
        name = next(iter(signatures))
    else:
        known = ", ".join(sorted(signatures)) or "none"
        raise UnsupportedModel(f"{path}: no {DEFAULT_SIGNATURE!r} signature to re-export (it has: {known})")
    fn = signatures[name]
    args, kwargs = fn.structured_input_signature
    specs = {**{str(i): s for i, s in enumerate(args)}, **kwargs}
    if len(specs) != 1:
        raise UnsupportedModel(
            f"{path}: signature {name!r} has {len(specs)} inputs; an image classifier has one"
        )
    input_key, input_spec = next(iter(specs.items()))
    outputs = fn.structured_outputs
    if not isinstance(outputs, dict) or len(outputs) != 1:
        count = len(outputs) if isinstance(outputs, dict) else "non-dict"
        raise UnsupportedModel(f"{path}: signature {name!r} has {count} outputs; an image classifier has one")
    output_key, output_spec = next(iter(outputs.items()))

    def call(x: tf.Tensor) -> tf.Tensor:
        return fn(**{input_key: x})[output_key]

    description: ModelDescription | None
    try:
        description = ModelDescription.load(path)
    except ValueError:
        description = None
    return SourceModel(
        call=call,
        input_shape=_shape(input_spec.shape),
        input_dtype=_dtype_name(input_spec.dtype),
        output_shape=_shape(output_spec.shape),
        kind="saved_model",
        source=description.source if description and description.source else path.name,
        description=description,
        owner=loaded,
    )


def _shape(shape: Any) -> Shape:
    if shape is None or getattr(shape, "rank", 0) is None:
        return ()  # unknown rank: refused later as not an image batch
    dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
    return tuple(None if d is None else int(d) for d in dims)


def _dtype_name(dtype: Any) -> str:
    return str(getattr(dtype, "name", dtype))

