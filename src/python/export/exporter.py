"""Keras model -> `<base>/<name>/<version>/`, a SavedModel TF Serving loads, verified.

The SavedModel is written with `keras.export.ExportArchive` and one endpoint whose input and
output names are chosen here. Not `tf.saved_model.save`: for a Keras 3 model it writes a
SavedModel TF Serving cannot run ("Could not find variable", tensorflow/serving#2226), with the
names `inputs` / `output_0` instead of the course's `input_8` / `dense_7`. No `track()` either:
the archive collects the variables the endpoint uses, so the weights are stored once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from clothing_preproc import (
    CLOTHING_LABELS,
    DEFAULT_SIGNATURE,
    PIXELS_SIGNATURE,
    PREDICT_METHOD_NAME,
    ModelDescription,
    PreprocessConfig,
)
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_MODEL_NAME, COURSE_OUTPUT_NAME
from export.errors import (
    BadOption,
    ExportError,
    ExportWriteError,
    UnsupportedModel,
    VerificationFailed,
    one_line,
)
from export.interface import ImageInterface, image_interface
from export.pixels import normalise_pixels
from export.progress import Progress
from export.samples import preprocess_samples, sample_pixels, synthetic_images
from export.show import read_signatures, tensor_descriptions
from export.source import SourceModel, from_keras
from export.verify import Verification, verify_export
from export.versions import next_version, staged_version
from export.warmup import MAX_RECORDS, warmup_log, write_warmup

# The `pixels` signature's input: uint8 RGB, normalised in the graph (export/pixels.py).
PIXELS_INPUT_NAME = "pixels"
# Each sample image gives two warmup records, one per signature.
MAX_SAMPLES = MAX_RECORDS // 2


def export_model(
    model: Any,
    base: str | Path,
    name: str = COURSE_MODEL_NAME,
    version: int | None = None,
    *,
    overwrite: bool = False,
    input_name: str = COURSE_INPUT_NAME,
    output_name: str = COURSE_OUTPUT_NAME,
    labels: Sequence[str] | None = None,
    family: str | None = None,
    target_size: tuple[int, int] | None = None,
    trained: bool | None = None,
    source: str | None = None,
    sample_images: Sequence[bytes] = (),
    warmup: bool = True,
    verify: bool = True,
    tolerance: float = 0.0,
    progress: Progress | None = None,
) -> Path:
    """Export `model` for TF Serving and return the new version directory.

    `model` is a Keras 3 or tf_keras model, or a `SourceModel` from `export.source.load_source`.
    The version defaults to the highest existing one + 1; an existing version is refused unless
    `overwrite`. Labels, preprocessing family and trained flag default to what a re-exported
    SavedModel's description says, else to the course model's. `sample_images` (encoded images;
    default: synthetic ones) feed the warmup records and the verification, which compares the
    export loaded as TF Serving loads it with the model (`tolerance` absolute; 0 = bit-identical).
    Besides `serving_default` (float32 images, normalised by the client) the export has a `pixels`
    signature (uint8 images, normalised in the graph), verified to answer bit for bit the same.
    Raises an `ExportError`; on any failure no version directory is left behind.
    """
    progress = progress or Progress()
    src = model if isinstance(model, SourceModel) else from_keras(model, source or "")
    carried = src.description
    labels = tuple(labels if labels is not None else carried.labels if carried else CLOTHING_LABELS)
    family = family or (carried.family if carried else "xception")
    if target_size is None and carried is not None:
        target_size = carried.target_size
    trained = trained if trained is not None else (carried.trained if carried else True)
    _check_names(name, input_name, output_name)
    interface = image_interface(src, labels, target_size)
    try:
        preprocess = PreprocessConfig(target_size=interface.target_size, family=family)
    except ValueError as e:
        raise BadOption(str(e)) from None
    images = list(sample_images) or synthetic_images()
    if len(images) > MAX_SAMPLES:
        raise BadOption(
            f"at most {MAX_SAMPLES} sample images (two warmup records each; TF Serving reads "
            f"{MAX_RECORDS}), not {len(images)}"
        )
    pixels = sample_pixels(images, preprocess)
    samples = preprocess_samples(pixels, preprocess)

    model_dir = Path(base) / name
    version = version if version is not None else next_version(model_dir)
    target = model_dir / str(version)
    with staged_version(model_dir, version, overwrite) as staging:
        with progress.step("trace", "tracing the serving function"):
            archive = _archive(src, interface, input_name, output_name, family)
        with progress.step("save", f"writing the SavedModel for {name} version {version}"):
            _write(archive, staging, target)
            signatures = read_signatures(staging)
            description = ModelDescription(
                model_name=name,
                signature_name=DEFAULT_SIGNATURE,
                method_name=PREDICT_METHOD_NAME,
                inputs=tensor_descriptions(signatures[DEFAULT_SIGNATURE].inputs),
                outputs=tensor_descriptions(signatures[DEFAULT_SIGNATURE].outputs),
                labels=labels,
                family=family,
                target_size=interface.target_size,
                trained=trained,
                source=source if source is not None else src.source,
            )
            _guard_write(lambda: description.save(staging), target)
            if warmup:
                logs = [warmup_log(image, name, DEFAULT_SIGNATURE, input_name) for image in samples]
                logs += [warmup_log(image, name, PIXELS_SIGNATURE, PIXELS_INPUT_NAME) for image in pixels]
                _guard_write(lambda: write_warmup(staging, logs), target)
        if verify:
            with progress.step("verify", "loading the export as TF Serving does and comparing outputs"):
                result = verify_export(
                    staging,
                    _reference(src),
                    samples,
                    pixels,
                    input_name=input_name,
                    output_name=output_name,
                    tolerance=tolerance,
                )
            progress.note(result.describe())
    progress.note(f"wrote {target}")
    return target


def verify_version(
    version_dir: str | Path, model: Any, *, tolerance: float = 0.0, sample_images: Sequence[bytes] = ()
) -> Verification:
    """Check an existing export against `model`, using its description for names and sizes."""
    version_dir = Path(version_dir)
    try:
        description = ModelDescription.load(version_dir)
    except ValueError as e:
        raise VerificationFailed(str(e)) from None
    src = model if isinstance(model, SourceModel) else from_keras(model)
    config = PreprocessConfig(target_size=description.target_size, family=description.family)
    pixels = sample_pixels(list(sample_images) or synthetic_images(), config)
    return verify_export(
        version_dir,
        _reference(src),
        preprocess_samples(pixels, config),
        pixels,
        signature_name=description.signature_name,
        input_name=next(iter(description.inputs)),
        output_name=next(iter(description.outputs)),
        tolerance=tolerance,
    )


def _archive(
    src: SourceModel, interface: ImageInterface, input_name: str, output_name: str, family: str
) -> Any:
    spec = tf.TensorSpec(interface.input_shape, tf.float32, name=input_name)
    pixels_spec = tf.TensorSpec(interface.input_shape, tf.uint8, name=PIXELS_INPUT_NAME)

    def serve(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {output_name: src.call(x)}

    def serve_pixels(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        return {output_name: src.call(normalise_pixels(pixels, family))}

    archive = keras.export.ExportArchive()
    try:
        endpoints = [
            archive.add_endpoint(DEFAULT_SIGNATURE, serve, input_signature=[spec]),
            archive.add_endpoint(PIXELS_SIGNATURE, serve_pixels, input_signature=[pixels_spec]),
        ]
        # Trace now, not lazily inside write_out: a model that cannot be traced fails here, with
        # nothing written, and the progress shows where the time goes.
        for endpoint in endpoints:
            endpoint.get_concrete_function()
    except (TypeError, ValueError, NotImplementedError, tf.errors.OpError) as e:
        raise UnsupportedModel(f"the model cannot be traced for serving: {one_line(e)}") from e
    return archive


def _write(archive: Any, staging: Path, target: Path) -> None:
    def write() -> None:
        archive.write_out(str(staging), verbose=False)

    _guard_write(write, target)


def _guard_write(write: Callable[[], object], target: Path) -> None:
    """Run a write step; disk full, permissions and the like become one `ExportWriteError`."""
    try:
        write()
    except ExportError:
        raise
    except OSError as e:
        raise ExportWriteError(f"cannot write {target}: {e.strerror or e}") from None
    except tf.errors.OpError as e:
        # TensorFlow's file system reports ENOSPC and EACCES as its own errors.
        raise ExportWriteError(f"cannot write {target}: {one_line(e)}") from None


def _reference(src: SourceModel) -> Callable[[npt.NDArray[np.float32]], npt.NDArray[Any]]:
    """The model's answers as `model.predict` computes them: in a graph (a `tf.function`).

    Run eagerly, op by op, a model can differ from its own graph in the last bit (graph
    optimisations fuse operations); TF Serving runs the graph, so the graph is the reference.
    """
    graph_call = tf.function(src.call)

    def reference(x: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        return np.asarray(graph_call(tf.constant(x)))

    return reference


def _check_names(name: str, input_name: str, output_name: str) -> None:
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        raise BadOption(f"model name {name!r} must be a plain directory name")
    for kind, alias in (("input", input_name), ("output", output_name)):
        # TensorFlow op names: letters, digits, '_', '.', '-', '/', not starting with '_' or '-'.
        if not alias or not (alias[0].isalnum() or alias[0] == ".") or not all(
            c.isalnum() or c in "_.-/" for c in alias
        ):
            raise BadOption(f"{kind} name {alias!r} is not a valid TensorFlow tensor name")
