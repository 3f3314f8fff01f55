"""The REST front: TF Serving's `/v1/models/…` API on Starlette.

    GET  /v1/models/NAME[/versions/N | /labels/L]            model status
    GET  /v1/models/NAME[/versions/N | /labels/L]/metadata   signature defs
    POST /v1/models/NAME[/versions/N | /labels/L]:predict    row (instances) or columnar (inputs)
    POST /v1/models/NAME[/versions/N | /labels/L]:classify   examples (and context) -> results
    POST /v1/models/NAME[/versions/N | /labels/L]:regress    examples (and context) -> results

Errors are `{"error": "<message>"}` with TF Serving's status table (`http_status`), the one place
codes become HTTP statuses. Parsing and the model run happen on worker threads: a 5 MB JSON image
must not stall the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from model_server.core import ModelRef, ServingCore
from model_server.errors import (
    Code,
    FailedPrecondition,
    InvalidArgument,
    RequestTooLarge,
    ServingError,
)
from model_server.rest_json import (
    classify_response_json,
    parse_examples_body,
    parse_predict_body,
    predict_response_json,
    regress_response_json,
)
from model_server.signatures import DEFAULT_SIGNATURE, Signature

log = logging.getLogger(__name__)

# TF Serving's path patterns (http_rest_api_util.cc), case-insensitive as there.
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)", re.IGNORECASE
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?", re.IGNORECASE
)

# TF Serving's ToHTTPStatusCode (http_server.cc).
_HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


def http_status(error: ServingError) -> int:
    if isinstance(error, RequestTooLarge):
        return 413  # not a TF Serving case (it has no limit); 413 is what HTTP clients expect
    return _HTTP_STATUS.get(error.code, 500)


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, indent=1).encode("utf-8"), status, media_type="application/json")


def _error(error: ServingError) -> Response:
    return _json({"error": error.message}, http_status(error))


def create_app(
    core: ServingCore,
    executor: Executor,
    *,
    max_request_bytes: int,
    timeout_ms: int,
    prometheus_path: str | None = None,
) -> Starlette:
    """The REST app; every request goes through `core`, its work runs on `executor`'s threads.
    With `prometheus_path`, GET there answers the core's request metrics (Prometheus text)."""
    timeout = timeout_ms / 1000 if timeout_ms > 0 else None

    async def in_thread(work: Callable[[], Response]) -> Response:
        future = asyncio.get_running_loop().run_in_executor(executor, work)
        try:
            # shield: a model run cannot be interrupted; the caller is answered at the deadline
            # and the core's admission bound keeps abandoned runs from piling up.
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return _error(ServingError("Deadline exceeded", Code.DEADLINE_EXCEEDED))

    async def dispatch(request: Request) -> Response:
        path = request.url.path
        method = request.method
        try:
            if method == "POST" and (m := _PREDICT_PATH.fullmatch(path)):
                ref = _ref(m.group(1), m.group(2), m.group(3))
                verb = m.group(4).lower()
                body = await _read_body(request, max_request_bytes)
                if verb == "predict":
                    return await in_thread(lambda: _predict(core, ref, body))
                return await in_thread(lambda: _classify_or_regress(core, ref, verb, body))
            if method == "GET" and (m := _STATUS_PATH.fullmatch(path)):
                if not m.group(1):
                    raise InvalidArgument("Missing model name in request.")
                ref = _ref(m.group(1), m.group(2), m.group(3))
                if m.group(4):
                    return await in_thread(lambda: _metadata(core, ref))
                return await in_thread(lambda: _status(core, ref))
            raise InvalidArgument(f"Malformed request: {method} {path}")
        except ServingError as e:
            return _error(e)
        except Exception:
            log.exception("REST %s %s failed", method, path)
            return _json({"error": "Internal error in the model server"}, 500)

    routes = []
    metrics = core.metrics
    if prometheus_path is not None and metrics is not None:

        async def prometheus(_request: Request) -> Response:
            return Response(metrics.exposition(), media_type=metrics.content_type)

        routes.append(Route(prometheus_path, prometheus, methods=["GET"]))
    routes.append(Route("/{path:path}", dispatch, methods=["GET", "POST"]))
    return Starlette(routes=routes)


def _ref(name: str, version: str | None, label: str | None) -> ModelRef:
    return ModelRef(name=name, version=int(version) if version else None, label=label)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"Request body of {declared} bytes is larger than the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"Request body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _predict(core: ServingCore, ref: ModelRef, body: bytes) -> Response:
    def signature_for(name: str) -> Signature:
        # The REST handler types the JSON values by the signature's inputs (TF Serving's GetInfoMap),
        # and words an unknown signature its own way.
        try:
            return core.signature(replace(ref, signature_name=name))
        except FailedPrecondition:
            raise InvalidArgument(
                f'Serving signature name: "{name or DEFAULT_SIGNATURE}" not found in signature def'
            ) from None

    try:
        parsed = parse_predict_body(body, signature_for)
        named = replace(ref, signature_name=parsed.signature_name)
        result = core.predict(named, parsed.inputs, (), lambda _alias, array: array, entrypoint="REST")
        return Response(predict_response_json(result.outputs, parsed.format), media_type="application/json")
    except ServingError as e:
        return _error(e)


def _classify_or_regress(core: ServingCore, ref: ModelRef, verb: str, body: bytes) -> Response:
    try:
        name, input_ = parse_examples_body(body)
        named = replace(ref, signature_name=name)
        if verb == "classify":
            (task,) = core.classify(named, input_, entrypoint="REST").tasks
            payload = classify_response_json(task.classifications or [])
        else:
            (task,) = core.regress(named, input_, entrypoint="REST").tasks
            payload = regress_response_json(task.regressions or [])
        return Response(payload, media_type="application/json")
    except ServingError as e:
        return _error(e)


def _status(core: ServingCore, ref: ModelRef) -> Response:
    try:
        statuses = core.status(ref)
    except ServingError as e:
        return _error(e)
    return _json(
        {
            "model_version_status": [
                {
                    "version": str(s.version),
                    "state": s.state.name,
                    "status": {"error_code": s.error_code.name, "error_message": s.error_message},
                }
                for s in statuses
            ]
        }
    )


def _metadata(core: ServingCore, ref: ModelRef) -> Response:
    try:
        meta = core.metadata(ref, ["signature_def"])
    except ServingError as e:
        return _error(e)
    # TF Serving's layout: the SignatureDefMap's JSON under metadata.signature_def.
    signature_map = json_format.MessageToDict(
        meta.signature_defs,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    # TF Serving prints every field but a SignatureDef's empty `defaults` map (a field newer than
    # its JSON answers, which its own tests' expected metadata leave out).
    for signature in signature_map.get("signature_def", {}).values():
        if not signature.get("defaults"):
            signature.pop("defaults", None)
    return _json(
        {
            "model_spec": {"name": meta.model_name, "signature_name": "", "version": str(meta.version)},
            "metadata": {"signature_def": signature_map},
        }
    )
