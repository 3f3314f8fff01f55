"""Load an export the way TF Serving does and check that it answers like the source model.

TF Serving does not use TensorFlow 2's `tf.saved_model.load`: it loads the `serve` MetaGraph into a
TF1 session (restoring variables by name) and runs the signature's tensors. That is what fails for
a Keras 3 model written with `tf.saved_model.save` ("Could not find variable …",
tensorflow/serving#2226), while TF 2 loads the same directory happily. So the check here is the
TF1 session loader of `tf.compat.v1.saved_model`, as `saved_model_cli run` uses, in a fresh graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from clothing_preproc import (
    DEFAULT_SIGNATURE,
    PIXELS_SIGNATURE,
    PREDICT_METHOD_NAME,
    TensorCodecError,
    tensor_proto_to_array,
)
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_OUTPUT_NAME
from clothing_protos import serving_pb2
from export.errors import VerificationFailed, one_line
from export.warmup import read_warmup

SERVE_TAG = "serve"


@dataclass(frozen=True)
class Verification:
    """What the check found: samples compared, largest difference, warmup records replayed."""

    samples: int
    max_abs_diff: float
    warmup_records: int
    pixels_checked: bool = False  # the pixels signature answered exactly as serving_default

    def describe(self) -> str:
        match = "bit-identical" if self.max_abs_diff == 0 else f"max |difference| {self.max_abs_diff:.3g}"
        pixels = ""
        if self.pixels_checked:
            pixels = f"; the {PIXELS_SIGNATURE} signature answers the same, bit for bit"
        return (
            f"loaded as TF Serving loads it; {self.samples} sample images {match}{pixels}; "
            f"{self.warmup_records} warmup records replayed"
        )


class ServingSession:
    """A SavedModel loaded into a TF1 session, answering Predict like TF Serving (no server)."""

    def __init__(self, session: Any, signatures: Mapping[str, Any]) -> None:
        self._session = session
        self.signatures = signatures

    def predict(
        self, inputs: Mapping[str, npt.NDArray[Any]], signature_name: str = DEFAULT_SIGNATURE
    ) -> dict[str, npt.NDArray[Any]]:
        """Run a signature on arrays keyed by input alias; every output, keyed by alias."""
        if signature_name not in self.signatures:
            raise VerificationFailed(f'signature "{signature_name}" not found in the export')
        sig = self.signatures[signature_name]
        if set(inputs) != set(sig.inputs):
            raise VerificationFailed(
                f"inputs {sorted(inputs)} do not match the signature's {sorted(sig.inputs)}"
            )
        feed = {sig.inputs[alias].name: array for alias, array in inputs.items()}
        fetch = {alias: info.name for alias, info in sig.outputs.items()}
        try:
            result: dict[str, npt.NDArray[Any]] = self._session.run(fetch, feed_dict=feed)
        except (tf.errors.OpError, ValueError, TypeError) as e:
            raise VerificationFailed(f"running the export as TF Serving would fails: {one_line(e)}") from e
        return result


@contextmanager
def serving_session(version_dir: str | Path) -> Iterator[ServingSession]:
    """Load `version_dir` like TF Serving: the `serve` MetaGraph into a TF1 session, fresh graph."""
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        try:
            meta_graph = tf.compat.v1.saved_model.loader.load(session, [SERVE_TAG], str(version_dir))
        except (tf.errors.OpError, RuntimeError, ValueError, OSError) as e:
            raise VerificationFailed(f"TF Serving could not load {version_dir}: {one_line(e)}") from e
        yield ServingSession(session, dict(meta_graph.signature_def))


def check_loads(version_dir: str | Path) -> int:
    """Load `version_dir` as TF Serving does and replay its warmup records; how many there were."""
    warmup = _read_warmup(Path(version_dir))
    with serving_session(version_dir) as served:
        _replay(served, warmup)
    return len(warmup)


def _read_warmup(version_dir: Path) -> list[serving_pb2.PredictionLog]:
    try:
        return read_warmup(version_dir)
    except (tf.errors.OpError, ValueError) as e:
        raise VerificationFailed(f"the warmup file cannot be read: {one_line(e)}") from e


def _replay(served: ServingSession, warmup: list[serving_pb2.PredictionLog]) -> None:
    # TF Serving replays these before serving a version; one it cannot run fails the whole load.
    for i, log in enumerate(warmup, start=1):
        if not log.HasField("predict_log"):
            raise VerificationFailed(f"warmup record {i} is not a Predict request")
        request = log.predict_log.request
        try:
            arrays = {alias: tensor_proto_to_array(t) for alias, t in request.inputs.items()}
        except TensorCodecError as e:
            raise VerificationFailed(f"warmup record {i} holds a bad tensor: {e}") from e
        served.predict(arrays, request.model_spec.signature_name or DEFAULT_SIGNATURE)


def verify_export(
    version_dir: str | Path,
    reference: Callable[[npt.NDArray[np.float32]], npt.NDArray[Any]],
    samples: npt.NDArray[np.float32],
    pixels: npt.NDArray[np.uint8] | None = None,
    *,
    signature_name: str = DEFAULT_SIGNATURE,
    input_name: str = COURSE_INPUT_NAME,
    output_name: str = COURSE_OUTPUT_NAME,
    tolerance: float = 0.0,
) -> Verification:
    """Fail with `VerificationFailed` unless the export loads, replays its warmup records and
    answers `samples` like `reference` (within `tolerance`, absolute; 0 = bit-identical).

    `pixels` are the same images as uint8 (`samples` is them normalised): if the export has a
    `pixels` signature, it must answer them exactly as the checked signature answers `samples`.
    """
    version_dir = Path(version_dir)
    warmup = _read_warmup(version_dir)
    with serving_session(version_dir) as served:
        sig = served.signatures.get(signature_name)
        if sig is None:
            known = ", ".join(sorted(served.signatures)) or "none"
            raise VerificationFailed(f'the export has no "{signature_name}" signature (it has: {known})')
        if sig.method_name != PREDICT_METHOD_NAME:
            raise VerificationFailed(
                f'signature "{signature_name}" is {sig.method_name!r}, not a predict signature'
            )
        if input_name not in sig.inputs or output_name not in sig.outputs:
            raise VerificationFailed(
                f"the export's signature has inputs {sorted(sig.inputs)} and outputs {sorted(sig.outputs)}, "
                f'not "{input_name}" and "{output_name}"'
            )
        _replay(served, warmup)
        served_out = served.predict({input_name: samples}, signature_name)[output_name]
        pixels_out = None
        if pixels is not None and PIXELS_SIGNATURE in served.signatures:
            pixels_out = _run_pixels(served, pixels, output_name)
    expected = np.asarray(reference(samples))
    if served_out.shape != expected.shape:
        raise VerificationFailed(
            f"the export returns shape {served_out.shape} where the model returns {expected.shape}"
        )
    if served_out.dtype != expected.dtype:
        raise VerificationFailed(
            f"the export returns {served_out.dtype} where the model returns {expected.dtype}"
        )
    finite = np.isfinite(expected) & np.isfinite(served_out)
    if not np.array_equal(np.isfinite(expected), np.isfinite(served_out)):
        raise VerificationFailed("the export and the model disagree on which scores are finite")
    diff = float(np.max(np.abs(served_out[finite] - expected[finite]), initial=0.0))
    if diff > tolerance:
        raise VerificationFailed(
            f"the export's scores differ from the model's by up to {diff:.3g} (tolerance {tolerance:g})"
        )
    if pixels_out is not None:
        _same_as_float32(pixels_out, served_out)
    return Verification(
        samples=len(samples),
        max_abs_diff=diff,
        warmup_records=len(warmup),
        pixels_checked=pixels_out is not None,
    )


def _run_pixels(
    served: ServingSession, pixels: npt.NDArray[np.uint8], output_name: str
) -> npt.NDArray[Any]:
    sig = served.signatures[PIXELS_SIGNATURE]
    if len(sig.inputs) != 1 or output_name not in sig.outputs:
        raise VerificationFailed(
            f'the "{PIXELS_SIGNATURE}" signature has inputs {sorted(sig.inputs)} and outputs '
            f'{sorted(sig.outputs)}; expected one uint8 input and "{output_name}"'
        )
    (alias,) = sig.inputs
    return served.predict({alias: pixels}, PIXELS_SIGNATURE)[output_name]


def _same_as_float32(got: npt.NDArray[Any], expected: npt.NDArray[Any]) -> None:
    """The pixels signature normalises in the graph what the client normalises otherwise: the
    scores must not differ in a single bit, or a gateway's answers would depend on which
    signature it found."""
    if got.shape == expected.shape and np.array_equal(got, expected, equal_nan=True):
        return
    diff = float(np.max(np.abs(got - expected), initial=0.0)) if got.shape == expected.shape else float("nan")
    raise VerificationFailed(
        f'the "{PIXELS_SIGNATURE}" signature answers differently from the float32 one '
        f"(up to {diff:.3g}): its in-graph normalisation does not match preprocess_input"
    )

