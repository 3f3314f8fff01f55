"""What a request means, whatever transport carried it: Predict, Classify, Regress,
MultiInference, GetModelMetadata, GetModelStatus.

The gRPC and REST fronts translate their wire format into these calls and `ServingError`s back
into their statuses; nothing here knows about either. Admission control lives here too, so both
fronts share one bound on the Predict calls in flight and one drain on shutdown.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy.typing as npt

from clothing_protos import input_pb2, serving_pb2
from model_server.errors import Code, InvalidArgument, ResourceExhausted, ServingError, Unavailable
from model_server.inference import Method, TaskResult, multi_tasks, run_tasks, single_task
from model_server.model_manager import ModelManager, VersionStatus
from model_server.monitoring import RequestMetrics
from model_server.signatures import Signature

T = TypeVar("T")
R = TypeVar("R")

SIGNATURE_DEF_FIELD = "signature_def"


@dataclass(frozen=True)
class ModelRef:
    """A request's ModelSpec: a model name, optionally a version or a label, and a signature."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""


@dataclass(frozen=True)
class PredictResult:
    model_name: str
    version: int
    signature_name: str
    outputs: dict[str, npt.NDArray[Any]]  # in the order the request asked for


@dataclass(frozen=True)
class InferenceResult:
    """What Classify, Regress (one task) and MultiInference (one per task) answer."""

    model_name: str
    version: int
    tasks: list[TaskResult]


@dataclass(frozen=True)
class ModelMetadata:
    model_name: str
    version: int
    signature_defs: serving_pb2.SignatureDefMap


class ServingCore:
    def __init__(
        self, manager: ModelManager, max_concurrent_requests: int, metrics: RequestMetrics | None = None
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self._limit = max_concurrent_requests
        self._in_flight = 0
        self._draining = False
        self._cv = threading.Condition()

    # --- admission and drain ---------------------------------------------------------------

    @contextmanager
    def _admitted(self) -> Iterator[None]:
        with self._cv:
            if self._draining:
                raise Unavailable("The model server is shutting down")
            if self._in_flight >= self._limit:
                raise ResourceExhausted(
                    f"Too many requests in flight: the limit is {self._limit} (--max_concurrent_requests)"
                )
            self._in_flight += 1
        try:
            yield
        finally:
            with self._cv:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._cv.notify_all()

    def start_drain(self) -> None:
        """Refuse new Predict calls from now on (UNAVAILABLE); those in flight carry on."""
        with self._cv:
            self._draining = True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no Predict call is in flight; False if `timeout` seconds pass first."""
        with self._cv:
            return self._cv.wait_for(lambda: self._in_flight == 0, timeout=timeout)

    @property
    def in_flight(self) -> int:
        """Predict calls admitted and not yet answered."""
        with self._cv:
            return self._in_flight

    @property
    def draining(self) -> bool:
        return self._draining

    def ready(self) -> bool:
        return not self._draining and self.manager.ready()

    # --- requests --------------------------------------------------------------------------

    def _measured(self, ref: ModelRef | None, api: str, entrypoint: str, work: Callable[[], R]) -> R:
        """Run `work`, recording its status and latency under TF Serving's request metrics."""
        if self.metrics is None:
            return work()
        started = time.monotonic()
        status = Code.OK.name
        try:
            return work()
        except ServingError as e:
            status = e.code.name
            raise
        except Exception:
            status = Code.INTERNAL.name
            raise
        finally:
            name = ref.name if ref is not None else ""
            self.metrics.record(name, api, entrypoint, status, time.monotonic() - started)

    def predict(
        self,
        ref: ModelRef | None,
        inputs: Mapping[str, T],
        output_filter: Sequence[str],
        decode: Callable[[str, T], npt.NDArray[Any]],
        describe: Callable[[str, T], tuple[int, tuple[int, ...]]] | None = None,
        entrypoint: str = "GRPC",
    ) -> PredictResult:
        """Check a request against its signature, decode its inputs, run it.

        `decode(alias, value)` turns one transported input into an array; it runs only after the
        input names are checked, so errors come in TF Serving's order. `describe(alias, value)`,
        if given, says an input's (dtype, shape) without decoding it: those are checked against
        the signature first, so nothing is allocated for an input the model would refuse.
        """
        return self._measured(
            ref, "Predict", entrypoint, lambda: self._predict(ref, inputs, output_filter, decode, describe)
        )

    def _predict(
        self,
        ref: ModelRef | None,
        inputs: Mapping[str, T],
        output_filter: Sequence[str],
        decode: Callable[[str, T], npt.NDArray[Any]],
        describe: Callable[[str, T], tuple[int, tuple[int, ...]]] | None,
    ) -> PredictResult:
        if ref is None:
            raise InvalidArgument("Missing ModelSpec")
        with self._admitted(), self.manager.servable(ref.name, ref.version, ref.label) as servable:
            signature = servable.signature(ref.signature_name)
            fetch = signature.check_names(inputs, output_filter)
            if describe is not None:
                signature.check_inputs({alias: describe(alias, value) for alias, value in inputs.items()})
            arrays = {alias: decode(alias, value) for alias, value in inputs.items()}
            signature.check_tensors(arrays)
            outputs = servable.run(signature, arrays, fetch)
            return PredictResult(ref.name, servable.version, signature.name, {a: outputs[a] for a in fetch})

    def classify(
        self, ref: ModelRef | None, input_: input_pb2.Input, entrypoint: str = "GRPC"
    ) -> InferenceResult:
        return self._measured(ref, "Classify", entrypoint, lambda: self._single(ref, Method.CLASSIFY, input_))

    def regress(
        self, ref: ModelRef | None, input_: input_pb2.Input, entrypoint: str = "GRPC"
    ) -> InferenceResult:
        return self._measured(ref, "Regress", entrypoint, lambda: self._single(ref, Method.REGRESS, input_))

    def _single(self, ref: ModelRef | None, method: Method, input_: input_pb2.Input) -> InferenceResult:
        if ref is None:
            raise InvalidArgument("Missing ModelSpec")
        with self._admitted(), self.manager.servable(ref.name, ref.version, ref.label) as servable:
            task = single_task(method, ref.signature_name, servable.model.signature_defs)
            (result,) = run_tasks(servable.model, [task], input_)
            return InferenceResult(ref.name, servable.version, [result])

    def multi_inference(
        self, tasks: Sequence[tuple[ModelRef, str]], input_: input_pb2.Input, entrypoint: str = "GRPC"
    ) -> InferenceResult:
        """Several classify/regress signatures of one model on the same examples, in one run.
        `tasks` are (model spec, method name) pairs; the first task's spec picks the version."""
        first = tasks[0][0] if tasks else None
        return self._measured(first, "MultiInference", entrypoint, lambda: self._multi(tasks, input_))

    def _multi(self, tasks: Sequence[tuple[ModelRef, str]], input_: input_pb2.Input) -> InferenceResult:
        if not tasks:
            multi_tasks([], {})  # TF Serving's error for a request without tasks
        ref = tasks[0][0]
        if not ref.name:
            raise InvalidArgument("Found ModelSpec with an empty model name.")
        with self._admitted(), self.manager.servable(ref.name, ref.version, ref.label) as servable:
            planned = multi_tasks(
                [(r.name, r.signature_name, method) for r, method in tasks], servable.model.signature_defs
            )
            results = run_tasks(servable.model, planned, input_)
            return InferenceResult(ref.name, servable.version, results)

    def signature(self, ref: ModelRef) -> Signature:
        """The signature a request would run (REST reads its input dtypes to parse JSON)."""
        with self.manager.servable(ref.name, ref.version, ref.label) as servable:
            return servable.signature(ref.signature_name)

    def metadata(self, ref: ModelRef | None, fields: Sequence[str]) -> ModelMetadata:
        if ref is None:
            raise InvalidArgument("Missing ModelSpec")
        if not fields:
            raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
        for name in fields:
            if name != SIGNATURE_DEF_FIELD:
                raise InvalidArgument(f"Metadata field {name} is not supported")
        with self.manager.servable(ref.name, ref.version, ref.label) as servable:
            sig_map = serving_pb2.SignatureDefMap()
            for name, sig in servable.model.signature_defs.items():
                sig_map.signature_def[name].CopyFrom(sig)
            return ModelMetadata(ref.name, servable.version, sig_map)

    def status(self, ref: ModelRef | None) -> list[VersionStatus]:
        if ref is None:
            raise InvalidArgument("Missing ModelSpec")
        version = ref.version
        if ref.label is not None:
            # TF Serving's GetModelStatus ignores labels too: it answers for every version.
            version = None
        return self.manager.status(ref.name, version)
