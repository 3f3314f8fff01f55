"""The gateway's errors, and the one place where any error becomes an HTTP answer.

    GatewayError                     anything the gateway refuses or cannot do
    ├── BadRequest                   400 bad_request: malformed JSON, missing fields, bad parameters
    │   └── UrlNotAllowed            400 url_not_allowed: scheme, credentials or an address the SSRF
    │                                    policy blocks (private, loopback, metadata, …)
    ├── Unauthorized                 401 unauthorized: no API key, or one the key file does not hold
    ├── KeyRevoked                   403 key_revoked: an API key the key file marks revoked
    ├── VersionNotFound              404 version_not_found: the version or label asked for names no
    │                                    version TF Serving serves (the message lists those it does)
    ├── PayloadTooLarge              413 too_large: body, upload or fetched image over the byte limit
    ├── ImageHostFailed              502 image_host_failed: the image URL could not be fetched
    ├── ImageHostTimeout             504 image_host_timeout: the image host was too slow
    ├── Overloaded                   429 overloaded: the gateway's concurrency limit is full
    ├── ModelUnavailable             503 model_unavailable: TF Serving unreachable or model not loaded
    │   └── ModelNotFound            503 model_unavailable: TF Serving's NOT_FOUND (serving.py tells a
    │                                    pinned version or label it does not serve: VersionNotFound)
    ├── ModelDeadlineExceeded        504 deadline_exceeded: TF Serving did not answer in time
    └── ModelFailed                  502 model_error: TF Serving refused the request or answered
        │                                something the gateway cannot read
        └── ModelRefused             502 model_error: TF Serving's INVALID_ARGUMENT or
                                         FAILED_PRECONDITION (an unknown label: VersionNotFound, as above)

`ERRORS` is the one table of answers: each kind of error with its status, code and meaning. It
holds `clothing_preproc`'s errors too (too large or too many pixels → 413, not an image → 415,
unreadable or unsupported image → 422, a tensor the model answered that cannot be read → 502),
a client that hung up mid-body, and Starlette's 404 and 405. `describe` answers from it, and the
OpenAPI description (openapi.py) lists its codes and meanings. Anything else is a bug: answered 500
with a generic message, its traceback logged once.

Every error answer of the gateway's own routes has the same JSON shape: `{"error": {"code": …,
"message": …}}`; so has each failed image in a batch's results (`error_body`). The routes of
other servers' protocols (TF Serving's REST API under /v1/models/, KServe v1 and v2) answer
their protocol's shape, `{"error": "…"}`, with the same status (`PLAIN_ERROR_PREFIXES`).
KServe v2 over gRPC answers the same message with the gRPC code of its status (`grpc_answer`,
`GRPC_CODES`).
A GatewayError's `detail` (an internal address, TF Serving's own words) goes to the log, never
into the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import NamedTuple

import grpc
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

from clothing_preproc import (
    InputTooLarge,
    NotAnImage,
    PreprocessingError,
    TensorCodecError,
    TooManyPixels,
    UnreadableImage,
    UnsupportedImage,
)

log = logging.getLogger("gateway")


class GatewayError(Exception):
    """Base of the gateway's own errors; `ERRORS` says how each is answered."""

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # For the gateway's log only, never the answer: e.g. the address a refused host name
        # resolves to, which would map internal names for anyone who asks.
        self.detail = detail


class BadRequest(GatewayError):
    pass


class UrlNotAllowed(BadRequest):
    pass


class PayloadTooLarge(GatewayError):
    pass


class Unauthorized(GatewayError):
    pass


class KeyRevoked(GatewayError):
    pass


class VersionNotFound(GatewayError):
    pass


class ImageHostFailed(GatewayError):
    pass


class ImageHostTimeout(GatewayError):
    pass


class Overloaded(GatewayError):
    pass


class ModelUnavailable(GatewayError):
    pass


class ModelDeadlineExceeded(GatewayError):
    pass


class ModelFailed(GatewayError):
    pass


class ModelNotFound(ModelUnavailable):
    pass


class ModelRefused(ModelFailed):
    pass


class ErrorKind(NamedTuple):
    """One row of `ERRORS`: the exceptions of `kinds` are answered `status` with `code`."""

    kinds: tuple[type[BaseException], ...]
    status: int
    code: str
    meaning: str  # for the API's description
    # Seconds a client should wait before retrying (sent as Retry-After), when retrying helps.
    retry_after: int | None = None
    # Headers the answer carries, e.g. the challenge of a 401 (RFC 9110 requires WWW-Authenticate).
    headers: tuple[tuple[str, str], ...] = ()


# Every error the gateway answers. The first row whose kinds match answers, so a subclass comes
# before its base; an HTTPException matches only the row of its own status.
ERRORS: tuple[ErrorKind, ...] = (
    ErrorKind(
        (UrlNotAllowed,),
        400,
        "url_not_allowed",
        "a URL the SSRF policy refuses: scheme, credentials, or an address that is private, loopback, "
        "link-local (cloud metadata), multicast or reserved",
    ),
    ErrorKind(
        (BadRequest, HTTPException),
        400,
        "bad_request",
        "malformed body, missing fields or bad parameters",
    ),
    ErrorKind(
        (ClientDisconnect,),
        400,
        "client_disconnected",
        "the client closed the connection before the whole body",
    ),
    ErrorKind(
        (Unauthorized,),
        401,
        "unauthorized",
        "no API key, or an unknown one (when the gateway has API keys)",
        headers=(("WWW-Authenticate", 'Bearer realm="clothing-gateway"'),),
    ),
    ErrorKind((KeyRevoked,), 403, "key_revoked", "the API key has been revoked"),
    ErrorKind((HTTPException,), 404, "not_found", "no such route, asset or model"),
    ErrorKind(
        (VersionNotFound,),
        404,
        "version_not_found",
        "the model version or version label asked for is not served (the message lists the versions "
        "that are)",
    ),
    ErrorKind((HTTPException,), 405, "method_not_allowed", "the route does not take this method"),
    ErrorKind(
        (PayloadTooLarge, InputTooLarge, TooManyPixels),
        413,
        "too_large",
        "body, upload or image over the byte or pixel limit",
    ),
    ErrorKind((NotAnImage,), 415, "not_an_image", "not an image in a supported format"),
    ErrorKind(
        (UnreadableImage, UnsupportedImage),
        422,
        "unreadable_image",
        "an image that cannot be decoded",
    ),
    ErrorKind((Overloaded,), 429, "overloaded", "the gateway's concurrency limit is full", retry_after=1),
    ErrorKind((ImageHostFailed,), 502, "image_host_failed", "the image host failed or refused"),
    ErrorKind(
        (ModelFailed, TensorCodecError),
        502,
        "model_error",
        "TF Serving refused the request, or answered something the gateway cannot read",
    ),
    ErrorKind(
        (ModelUnavailable,),
        503,
        "model_unavailable",
        "TF Serving unavailable or the model not loaded",
        retry_after=5,
    ),
    ErrorKind((ModelDeadlineExceeded,), 504, "deadline_exceeded", "TF Serving did not answer in time"),
    ErrorKind((ImageHostTimeout,), 504, "image_host_timeout", "the image host did not answer in time"),
)

# What a bug is answered: no row matches.
INTERNAL = ErrorKind((), 500, "internal", "a bug of the gateway; its log has the traceback")
_INTERNAL_MESSAGE = "internal error; the gateway's log has the details"


class Answer(NamedTuple):
    """How one exception is answered."""

    status: int  # the HTTP status
    code: str  # the error's code in the JSON body
    message: str  # what the client is told, in words
    retry_after: int | None  # seconds for Retry-After, or None for no header
    headers: tuple[tuple[str, str], ...] = ()  # the kind's own headers (WWW-Authenticate)


def kind_of(exc: BaseException) -> ErrorKind:
    """The row of `ERRORS` that answers `exc`, or INTERNAL."""
    status = exc.status_code if isinstance(exc, HTTPException) else None
    for kind in ERRORS:
        if isinstance(exc, kind.kinds) and status in (None, kind.status):
            return kind
    return INTERNAL


def describe(exc: BaseException) -> Answer:
    """How `exc` is answered: the one mapping of the gateway."""
    kind = kind_of(exc)
    if kind is INTERNAL:
        message = _INTERNAL_MESSAGE
    elif isinstance(exc, HTTPException):
        message = str(exc.detail)
    elif isinstance(exc, TensorCodecError):
        message = f"the model's answer cannot be read: {exc}"
    else:
        message = str(exc) or kind.meaning
    return Answer(kind.status, kind.code, message, kind.retry_after, kind.headers)


# How an answer's status is told over gRPC (KServe v2's inference.GRPCInferenceService), with the
# same message: every status a row of `ERRORS` (or INTERNAL) answers has its code here. 413 is
# RESOURCE_EXHAUSTED, as gRPC itself answers a message over its size limit; 429 and 503 are
# UNAVAILABLE, the code gRPC clients retry with backoff.
GRPC_CODES: Mapping[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.UNAVAILABLE,
    431: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    502: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def grpc_answer(exc: BaseException) -> tuple[Answer, grpc.StatusCode]:
    """How `exc` is answered over gRPC: its answer (status, code, message) and gRPC status code.
    Logged as an HTTP answer would be, a bug with its traceback (no server logs it for gRPC)."""
    answer = describe(exc)
    if answer.code == INTERNAL.code:
        log.error("unhandled error", exc_info=exc)
    else:
        _log(exc, answer)
    return answer, GRPC_CODES.get(answer.status, grpc.StatusCode.UNKNOWN)


# Paths whose protocol answers errors as `{"error": "…"}` (TF Serving's REST API, KServe v1 and v2).
PLAIN_ERROR_PREFIXES = ("/v1/models/", "/v2/")

# The errors the app's router answers itself. Any other exception reaches Starlette's outermost
# middleware, which answers it through `error_response` and then re-raises it for the server to
# log with its traceback (uvicorn: "Exception in ASGI application"); logging it here as well would
# print every bug twice.
ROUTER_HANDLED = (HTTPException, GatewayError, PreprocessingError, ClientDisconnect)


def error_response(exc: BaseException, path: str = "") -> Response:
    """The JSON answer for `exc` on `path` (logged with its traceback when it is a bug the router
    answered, with its detail when it has one)."""
    answer = describe(exc)
    _log(exc, answer)
    headers: dict[str, str] = {}
    if isinstance(exc, HTTPException) and exc.headers:
        headers.update(exc.headers)  # e.g. Allow on a 405 (RFC 9110 requires it)
    if answer.retry_after is not None:
        headers["Retry-After"] = str(answer.retry_after)
    headers.update(answer.headers)
    if path.startswith(PLAIN_ERROR_PREFIXES):
        return JSONResponse({"error": answer.message}, status_code=answer.status, headers=headers)
    body = {"error": {"code": answer.code, "message": answer.message}}
    return JSONResponse(body, status_code=answer.status, headers=headers)


def error_body(exc: BaseException) -> dict[str, dict[str, str]]:
    """`{"error": {"code", "message"}}` for one image of a batch (the same mapping as an answer)."""
    answer = describe(exc)
    _log(exc, answer)
    return {"error": {"code": answer.code, "message": answer.message}}


def _log(exc: BaseException, answer: Answer) -> None:
    if answer.code == INTERNAL.code and isinstance(exc, ROUTER_HANDLED):
        log.error("unhandled error", exc_info=exc)
    elif isinstance(exc, GatewayError) and exc.detail:
        log.warning("%s %s: %s", answer.status, answer.code, exc.detail)
