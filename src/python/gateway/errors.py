"""The gateway's errors, and the one place where any error becomes an HTTP answer.

    GatewayError                     anything the gateway refuses or cannot do (status, code)
    ├── BadRequest                   400 bad_request: malformed JSON, missing fields, bad parameters
    │   └── UrlNotAllowed            400 url_not_allowed: scheme, credentials or an address the SSRF
    │                                    policy blocks (private, loopback, metadata, …)
    ├── PayloadTooLarge              413 too_large: body, upload or fetched image over the byte limit
    ├── ImageHostFailed              502 image_host_failed: the image URL could not be fetched
    ├── ImageHostTimeout             504 image_host_timeout: the image host was too slow
    ├── Overloaded                   429 overloaded: the gateway's concurrency limit is full
    ├── ModelUnavailable             503 model_unavailable: TF Serving unreachable or model not loaded
    ├── ModelDeadlineExceeded        504 deadline_exceeded: TF Serving did not answer in time
    └── ModelFailed                  502 model_error: TF Serving refused the request or answered
                                         something the gateway cannot read

Errors from `clothing_preproc` (bad images) keep their own tree and are mapped here too: too large or
too many pixels → 413, not an image → 415, unreadable or unsupported image → 422. Anything else is
a bug: it is logged with its traceback and answered 500 with a generic message.

Every error answer of the gateway's own routes has the same JSON shape: `{"error": {"code": …,
"message": …}}`; so has each failed image in a batch's results (`error_body`). The routes of
other servers' protocols (TF Serving's REST API under /v1/models/, KServe v2 under /v2/) answer
their protocol's shape, `{"error": "…"}`, with the same status (`PLAIN_ERROR_PREFIXES`).
A GatewayError's `detail` (an internal address,
TF Serving's own words) goes to the log, never into the answer.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
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
    """Base of the gateway's own errors; `status` and `code` say how it is answered."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"
    # Seconds a client should wait before retrying (sent as Retry-After), if retrying helps.
    retry_after: ClassVar[int | None] = None

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # For the gateway's log only, never the answer: e.g. the address a refused host name
        # resolves to, which would map internal names for anyone who asks.
        self.detail = detail


class BadRequest(GatewayError):
    status = 400
    code = "bad_request"


class UrlNotAllowed(BadRequest):
    code = "url_not_allowed"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "too_large"


class ImageHostFailed(GatewayError):
    status = 502
    code = "image_host_failed"


class ImageHostTimeout(GatewayError):
    status = 504
    code = "image_host_timeout"


class Overloaded(GatewayError):
    status = 429
    code = "overloaded"
    retry_after = 1


class ModelUnavailable(GatewayError):
    status = 503
    code = "model_unavailable"
    retry_after = 5


class ModelDeadlineExceeded(GatewayError):
    status = 504
    code = "deadline_exceeded"


class ModelFailed(GatewayError):
    status = 502
    code = "model_error"


# clothing_preproc's errors, most specific first.
PREPROCESSING_CODES: tuple[tuple[type[PreprocessingError], int, str], ...] = (
    (InputTooLarge, 413, "too_large"),
    (TooManyPixels, 413, "too_large"),
    (NotAnImage, 415, "not_an_image"),
    (UnreadableImage, 422, "unreadable_image"),
    (UnsupportedImage, 422, "unreadable_image"),
)


# The answers `describe` gives besides GatewayError's and PREPROCESSING_CODES' (openapi.py lists
# every code from these three).
OTHER_ANSWERS: tuple[BaseException, ...] = (
    TensorCodecError(""),
    ClientDisconnect(),
    HTTPException(404),
    HTTPException(405),
    RuntimeError(),
)


def describe(exc: BaseException) -> tuple[int, str, str, int | None]:
    """(status, code, message, retry_after) for any exception: the one mapping of the gateway."""
    if isinstance(exc, GatewayError):
        return exc.status, exc.code, exc.message, exc.retry_after
    if isinstance(exc, PreprocessingError):
        for kind, status, code in PREPROCESSING_CODES:
            if isinstance(exc, kind):
                return status, code, str(exc), None
        # TensorCodecError: the model answered a tensor the gateway cannot read.
        return 502, "model_error", f"the model's answer cannot be read: {exc}", None
    if isinstance(exc, ClientDisconnect):
        # The client hung up before its body arrived: nobody reads this answer, and it is not a bug
        # of the gateway, so no traceback (found by src/python/reliability/fuzz_test.py).
        return 400, "client_disconnected", "the client closed the connection before the whole body", None
    if isinstance(exc, HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return exc.status_code, code, str(exc.detail), None
    return 500, "internal", "internal error; the gateway's log has the details", None


# Paths whose protocol answers errors as `{"error": "…"}` (TF Serving's REST API, KServe v1 and v2).
PLAIN_ERROR_PREFIXES = ("/v1/models/", "/v2/")


def error_response(exc: BaseException, path: str = "") -> Response:
    """The JSON answer for `exc` on `path` (logged with its traceback when it is a bug, with its
    detail when it has one)."""
    status, code, message, retry_after = describe(exc)
    if status == 500:
        log.error("unhandled error", exc_info=exc)
    elif isinstance(exc, GatewayError) and exc.detail:
        log.warning("%s %s: %s", status, code, exc.detail)
    headers: dict[str, str] = {}
    if isinstance(exc, HTTPException) and exc.headers:
        headers.update(exc.headers)  # e.g. Allow on a 405 (RFC 9110 requires it)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if path.startswith(PLAIN_ERROR_PREFIXES):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def error_body(exc: BaseException) -> dict[str, dict[str, str]]:
    """`{"error": {"code", "message"}}` for one image of a batch (the same mapping as an answer)."""
    status, code, message, _ = describe(exc)
    if isinstance(exc, GatewayError) and exc.detail:
        log.warning("%s %s: %s", status, code, exc.detail)
    return {"error": {"code": code, "message": message}}


async def handle_exception(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: every error the app raises is answered through `describe`."""
    return error_response(exc, request.url.path)
