"""A servable: one loaded model version, its signatures, its batchers, its warmup.

Loading = the TF1 session loader (saved_model.py), then the warmup records replayed through the
same path requests take. When a version has no warmup file, each predict signature is run once on
a zero batch instead: TF Serving would report such a version AVAILABLE and fail every request
(e.g. "Could not find variable …" for `tf.saved_model.save(keras_model)` exports); here the
version fails to load, with that error in GetModelStatus, which is where an operator looks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy.typing as npt

from clothing_preproc import tensor_proto_to_array
from clothing_preproc.errors import TensorCodecError
from clothing_protos import serving_pb2
from model_server.batching import Batcher
from model_server.config_files import BatchingParameters
from model_server.errors import InvalidArgument, ServingError
from model_server.inference import Method, multi_tasks, run_tasks, single_task
from model_server.saved_model import SavedModel
from model_server.signatures import PREDICT_METHOD, Signature, find_signature, zeros_for
from model_server.warmup import read_warmup_logs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    batching: BatchingParameters | None
    enable_model_warmup: bool
    intra_op_parallelism: int = 0
    inter_op_parallelism: int = 0


class Servable:
    def __init__(
        self, name: str, version: int, model: SavedModel, batching: BatchingParameters | None
    ) -> None:
        self.name = name
        self.version = version
        self.model = model
        self._batching = batching
        self._batchers: dict[str, Batcher] = {}
        self._lock = threading.Lock()

    @property
    def signatures(self) -> Mapping[str, Signature]:
        return self.model.signatures

    def signature(self, name: str) -> Signature:
        return find_signature(self.model.signatures, name)

    def run(
        self, signature: Signature, inputs: Mapping[str, npt.NDArray[Any]], fetch: Sequence[str]
    ) -> dict[str, npt.NDArray[Any]]:
        """Run checked inputs, through the signature's batcher when batching is on and it can batch."""
        batcher = self._batcher(signature)
        if batcher is None:
            return self.model.run(signature, inputs, fetch)
        return batcher.submit(inputs, fetch)

    def _batcher(self, signature: Signature) -> Batcher | None:
        if self._batching is None or not signature.batchable:
            return None
        with self._lock:
            batcher = self._batchers.get(signature.name)
            if batcher is None:
                def run(inputs: Mapping[str, npt.NDArray[Any]], fetch: Sequence[str]) -> dict[str, Any]:
                    return self.model.run(signature, inputs, fetch)

                batcher = Batcher(run, self._batching, f"{self.name}-{self.version}-{signature.name}")
                self._batchers[signature.name] = batcher
            return batcher

    def flush(self) -> None:
        """Stop waiting for fuller batches: no more requests are coming (the server is draining)."""
        with self._lock:
            batchers = list(self._batchers.values())
        for batcher in batchers:
            batcher.flush()

    def close(self) -> None:
        with self._lock:
            batchers = list(self._batchers.values())
            self._batchers.clear()
        for batcher in batchers:
            batcher.close()
        self.model.close()


def load_servable(name: str, version: int, path: Path, options: LoadOptions) -> Servable:
    """Load, warm up and check one version; `ServingError` (with TF's status) if it cannot serve."""
    started = time.monotonic()
    model = SavedModel.load(path, options.intra_op_parallelism, options.inter_op_parallelism)
    servable = Servable(name, version, model, options.batching)
    try:
        records = read_warmup_logs(path) if options.enable_model_warmup else []
        for record in records:
            _replay(servable, record)
        if not records:
            _probe(servable)
    except ServingError:
        servable.close()
        raise
    log.info(
        "model %s version %d: loaded from %s in %.1f s (%d warmup records)",
        name, version, path, time.monotonic() - started, len(records),
    )
    return servable


def _replay(servable: Servable, record: serving_pb2.PredictionLog) -> None:
    """Run one warmup record the way its API runs a request."""
    kind = record.WhichOneof("log_type")
    defs = servable.model.signature_defs
    if kind == "classify_log":
        classify = record.classify_log.request
        task = single_task(Method.CLASSIFY, classify.model_spec.signature_name, defs)
        run_tasks(servable.model, [task], classify.input)
    elif kind == "regress_log":
        regress = record.regress_log.request
        task = single_task(Method.REGRESS, regress.model_spec.signature_name, defs)
        run_tasks(servable.model, [task], regress.input)
    elif kind == "multi_inference_log":
        multi = record.multi_inference_log.request
        tasks = multi_tasks(
            [(t.model_spec.name, t.model_spec.signature_name, t.method_name) for t in multi.tasks], defs
        )
        run_tasks(servable.model, tasks, multi.input)
    else:
        _replay_predict(servable, record.predict_log.request)


def _replay_predict(servable: Servable, request: serving_pb2.PredictRequest) -> None:
    signature = servable.signature(request.model_spec.signature_name)
    fetch = signature.check_names(request.inputs, list(request.output_filter))
    try:
        inputs = {alias: tensor_proto_to_array(t) for alias, t in request.inputs.items()}
    except TensorCodecError as e:
        raise InvalidArgument(f"warmup record: {e}") from e
    signature.check_tensors(inputs)
    servable.run(signature, inputs, fetch)


def _probe(servable: Servable) -> None:
    for signature in servable.signatures.values():
        if signature.method_name != PREDICT_METHOD:
            continue
        inputs = {alias: zeros_for(binding) for alias, binding in signature.inputs.items()}
        if any(v is None for v in inputs.values()):
            continue  # string or unknown-rank inputs: nothing sensible to send
        ready = {a: v for a, v in inputs.items() if v is not None}
        servable.model.run(signature, ready, tuple(signature.outputs))
