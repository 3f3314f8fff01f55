"""KServe's Open Inference Protocol (v2) over gRPC: `inference.GRPCInferenceService` on GATEWAY_GRPC_PORT.

The transport only: a `ModelInferRequest` becomes the same `kserve_v2.InferRequest` as a REST
body, goes through `Classifier.classify` (admission, work slots, limits, Keras-exact preprocessing,
metrics), and its outputs (`kserve_v2.output_tensors`) are written as typed `contents` or, when the
client asked for raw, as `raw_output_contents`. Errors are answered from errors.py's one table
(`grpc_answer`): the same message as over HTTP, with the gRPC code of its status.

The server is grpc.aio's, on the gateway's event loop, started and stopped by the app's lifespan
(`GrpcFront`); `main` begins its drain together with the HTTP server's, so both share the shutdown
grace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import grpc
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from clothing_protos import grpc_predict_v2_pb2 as pb
from clothing_protos import grpc_predict_v2_pb2_grpc as pb_grpc
from gateway import kserve_v2
from gateway.api_keys import KeyTable, presented_key
from gateway.classify import ImageResult, ImageSource
from gateway.decode_options import DecodeOptions
from gateway.errors import BadRequest, VersionNotFound, grpc_answer
from gateway.metrics import Metrics
from gateway.routes import Services
from gateway.settings import GrpcListener, ServingTarget
from gateway.versions import CanarySplit, ModelChoice, not_served, parse_version

log = logging.getLogger("gateway")

R = TypeVar("R")

SERVER_NAME = "clothing-classifier-gateway"
# Callable without an API key, like the REST protocol's /v2/health/live and /v2/health/ready:
# probes carry no key.
OPEN_CALLS = frozenset({"ServerLive", "ServerReady"})
# Calls that are not inferences (health, metadata) still answer while ModelInfer is at its limit.
EXTRA_CALLS = 8


def _headers(context: grpc.aio.ServicerContext) -> Headers:
    """The call's metadata as HTTP headers (binary `-bin` entries left out), so an API key is read
    from `authorization: Bearer …` or `x-api-key` exactly as over HTTP."""
    raw = [
        (key.encode("latin-1"), value.encode("latin-1"))
        for key, value in context.invocation_metadata() or ()
        if isinstance(value, str)
    ]
    return Headers(raw=raw)


def request_from_grpc(
    request: pb.ModelInferRequest, *, max_images: int, max_image_bytes: int
) -> kserve_v2.InferRequest:
    """The v2 request a `ModelInferRequest` carries: one BYTES input of encoded images, in
    `contents.bytes_contents` or in `raw_input_contents` (each element length-prefixed)."""
    if len(request.inputs) != 1:
        raise BadRequest(f'the request must hold one input, "{kserve_v2.INPUT_NAME}" (BYTES: encoded images)')
    tensor = request.inputs[0]
    count = kserve_v2.image_count(tensor.name, tensor.datatype, list(tensor.shape), max_images)
    raw = request.raw_input_contents
    if raw:
        if len(raw) != 1:
            raise BadRequest(f"raw_input_contents has {len(raw)} entries; it must have one per input (1)")
        if tensor.contents.bytes_contents:
            raise BadRequest("the input has both contents and raw_input_contents; send one of them")
        images = kserve_v2.binary_elements(raw[0], count, max_image_bytes)
    else:
        images = kserve_v2.sized_elements(tensor.contents.bytes_contents, count, max_image_bytes)
    parameters = _parameters(request.parameters)
    # Raw answers when the request came raw (as Triton's and KServe's servers answer), or asks.
    all_binary = bool(raw) or parameters.get("binary_data_output") is True
    requested = [(o.name, _parameters(o.parameters).get("binary_data")) for o in request.outputs]
    outputs, binary = kserve_v2.requested_outputs(requested, all_binary)
    return kserve_v2.InferRequest(
        sources=tuple(ImageSource(data=d) for d in images),
        outputs=outputs,
        binary=binary,
        id=request.id or None,
        parameters=parameters,
    )


def _parameters(parameters: Mapping[str, pb.InferParameter]) -> dict[str, object]:
    """InferParameters as plain values (a parameter with no value set is left out)."""
    out: dict[str, object] = {}
    for key, parameter in parameters.items():
        which = parameter.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(parameter, which)
    return out


def _parameter(value: object) -> pb.InferParameter:
    if isinstance(value, bool):
        return pb.InferParameter(bool_param=value)
    if isinstance(value, int):
        return pb.InferParameter(int64_param=value)
    return pb.InferParameter(string_param=str(value))


def response_to_grpc(
    request: kserve_v2.InferRequest,
    model: str,
    version: int | None,
    outputs: Sequence[kserve_v2.OutputTensor],
    parameters: Mapping[str, object] | None = None,
) -> pb.ModelInferResponse:
    """The `ModelInferResponse`. The protocol has raw contents for all outputs or for none, so a
    request that asks any output raw gets them all raw."""
    response = pb.ModelInferResponse(
        model_name=model,
        model_version="" if version is None else str(version),
        id=request.id or "",
    )
    for key, value in (parameters or {}).items():
        response.parameters[key].CopyFrom(_parameter(value))
    raw = any(request.binary[t.name] for t in outputs)
    for tensor in outputs:
        output = response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if raw:
            response.raw_output_contents.append(tensor.raw())
        elif tensor.values is not None:
            output.contents.fp32_contents.extend(tensor.values.reshape(-1).tolist())
        else:
            output.contents.bytes_contents.extend(t.encode() for t in tensor.texts)
    return response


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The six calls of the protocol, each counted in `gateway_requests_total` as `grpc:<call>`
    with the HTTP status its answer maps to (200 when it succeeds).

    The calls are coroutines, as grpc.aio runs them; the generated stubs type the servicer's
    methods for the synchronous server only, hence the `override` ignores."""

    def __init__(
        self,
        target: ServingTarget,
        services: Services,
        metrics: Metrics,
        *,
        versions: CanarySplit,
        decoding: DecodeOptions,
        keys: KeyTable | None = None,
    ) -> None:
        """`keys`: the API keys every call but the two health checks must carry (None: keys off)."""
        self._target = target
        self._services = services
        self._metrics = metrics
        self._versions = versions
        self._decoding = decoding
        self._keys = keys

    async def _answer(
        self, call: str, context: grpc.aio.ServicerContext, body: Callable[[], Awaitable[R]]
    ) -> R:
        route = f"grpc:{call}"
        self._metrics.start_request()
        try:
            if self._keys is not None and call not in OPEN_CALLS:
                self._keys.check(presented_key(_headers(context)))
            result = await body()
        except Exception as e:  # every error is answered from errors.py's table
            answer, code = grpc_answer(e)
            self._metrics.errors.labels(answer.code).inc()
            self._metrics.count_request(route, answer.status)
            await context.abort(code, answer.message)
            raise AssertionError("unreachable: abort raises") from None
        self._metrics.count_request(route, 200)
        return result

    def _check_model(self, name: str) -> None:
        if name != self._target.model_name:
            served = self._target.model_name
            # The REST routes' answer to a model they do not serve (a 404 not_found).
            raise HTTPException(404, f"no model named {name[:100]!r}; this gateway serves {served!r}")

    async def _versions_available(self, name: str, version: str) -> tuple[int, ...]:
        """The versions TF Serving has AVAILABLE; a version asked for must be one of them."""
        self._check_model(name)
        state = await self._services.serving.readiness()
        if version:
            choice = ModelChoice(version=parse_version(version, "version"))
            if choice.version not in state.versions:
                raise VersionNotFound(not_served(choice, name, state.versions))
        return state.versions

    async def ServerLive(  # type: ignore[override]
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        async def body() -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=True)

        return await self._answer("ServerLive", context, body)

    async def ServerReady(  # type: ignore[override]
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        async def body() -> pb.ServerReadyResponse:
            state = await self._services.serving.readiness()
            return pb.ServerReadyResponse(ready=state.ready)

        return await self._answer("ServerReady", context, body)

    async def ModelReady(  # type: ignore[override]
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        async def body() -> pb.ModelReadyResponse:
            # Not ready (rather than an error) for a model or version not served: what a client
            # polling readiness expects, as Triton answers it.
            if request.name != self._target.model_name:
                return pb.ModelReadyResponse(ready=False)
            state = await self._services.serving.readiness()
            version_served = not request.version or (
                request.version.isascii()
                and request.version.isdigit()
                and int(request.version) in state.versions
            )
            return pb.ModelReadyResponse(ready=state.ready and version_served)

        return await self._answer("ModelReady", context, body)

    async def ServerMetadata(  # type: ignore[override]
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        async def body() -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(name=SERVER_NAME, version="2", extensions=[])

        return await self._answer("ServerMetadata", context, body)

    async def ModelMetadata(  # type: ignore[override]
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        async def body() -> pb.ModelMetadataResponse:
            versions = await self._versions_available(request.name, request.version)
            inputs, outputs = kserve_v2.tensor_specs(self._target.labels)
            spec = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=request.name,
                versions=[str(v) for v in versions],
                platform=kserve_v2.PLATFORM,
                inputs=[spec(name=t.name, datatype=t.datatype, shape=t.shape) for t in inputs],
                outputs=[spec(name=t.name, datatype=t.datatype, shape=t.shape) for t in outputs],
            )

        return await self._answer("ModelMetadata", context, body)

    async def ModelInfer(  # type: ignore[override]
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        async def body() -> pb.ModelInferResponse:
            with self._metrics.request_seconds.labels("grpc:ModelInfer").time():
                self._check_model(request.model_name)
                choice = self._choice(request.model_version, context)
                infer = request_from_grpc(
                    request,
                    max_images=self._target.max_batch,
                    max_image_bytes=self._target.limits.max_bytes,
                )
                decoding = self._decoding.for_request({}, infer.parameters)
                result = await self._services.classifier.classify(
                    infer.sources, decoding=decoding, choice=choice
                )
                images = [r for r in result.results if isinstance(r, ImageResult)]
                outputs = kserve_v2.output_tensors(infer, images, self._target.labels)
                return response_to_grpc(
                    infer,
                    request.model_name,
                    result.model_version,
                    outputs,
                    result.decoding.v2_parameters(result.preprocessing),
                )

        return await self._answer("ModelInfer", context, body)

    def _choice(self, version: str, context: grpc.aio.ServicerContext) -> ModelChoice:
        """`model_version` pins a version (TF Serving's ModelSpec); without one the canary split
        chooses, by the client id in the call's metadata as in the HTTP header."""
        if version:
            return ModelChoice(version=parse_version(version, "model_version"))
        client_id = _headers(context).get(self._versions.client_id_header)
        return self._versions.for_client(client_id or None)


class GrpcFront:
    """The gateway's gRPC server: bound and started by `start` (in the lifespan, on the app's event
    loop), drained by `stop`, which `begin_stop` may start earlier (main: with the HTTP drain)."""

    def __init__(
        self, settings: GrpcListener, host: str, *, max_calls: int, max_message_bytes: int, grace: float
    ) -> None:
        self.settings = settings
        self.host = host
        self.grace = grace
        ms = 1000
        self.options: list[tuple[str, int]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_concurrent_streams", settings.max_streams),
            # A fixed window per call: with gRPC's BDP probing it grows to many MB, all of which a
            # client may send, and the gateway read, before an oversized message is refused.
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", settings.window_bytes),
            ("grpc.max_allowed_incoming_connections", settings.max_connections),
            # Keepalive enforcement: pings closer together than this are strikes; after two the
            # connection is closed (GOAWAY too_many_pings). Pings on an idle connection are
            # allowed at that pace; the idle limit closes the connection all the same.
            ("grpc.http2.min_ping_interval_without_data_ms", round(settings.min_ping_interval * ms)),
            ("grpc.http2.max_ping_strikes", 2),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_connection_idle_ms", round(settings.max_idle * ms)),
            ("grpc.max_connection_age_ms", round(settings.max_age * ms)),
            ("grpc.max_connection_age_grace_ms", round(grace * ms)),
            # A port another process holds fails the start instead of being shared with it.
            ("grpc.so_reuseport", 0),
        ]
        self.max_calls = max_calls
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._stopping: asyncio.Task[None] | None = None

    async def start(self, service: InferenceService) -> None:
        server = grpc.aio.server(options=self.options, maximum_concurrent_rpcs=self.max_calls)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)
        port = self.settings.port
        address = f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as e:
            raise OSError(f"GATEWAY_GRPC_PORT={port}: cannot listen on {address}: {e}") from None
        await server.start()
        self._server = server
        log.info("KServe v2 over gRPC on %s", address)

    def begin_stop(self) -> None:
        """Refuse new calls now; those in progress get the grace (idempotent)."""
        if self._server is not None and self._stopping is None:
            self._stopping = asyncio.ensure_future(self._server.stop(self.grace))

    async def stop(self) -> None:
        """Stop as `begin_stop`, and wait until the server has stopped."""
        self.begin_stop()
        if self._stopping is not None:
            await self._stopping
