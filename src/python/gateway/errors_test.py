from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from clothing_preproc import (
    InputTooLarge,
    NotAnImage,
    PreprocessingError,
    TensorCodecError,
    TooManyPixels,
    UnreadableImage,
    UnsupportedImage,
)
from gateway import errors, openapi, parse_settings, routes


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (errors.BadRequest("x"), 400, "bad_request"),
        (errors.UrlNotAllowed("x"), 400, "url_not_allowed"),
        (ClientDisconnect(), 400, "client_disconnected"),
        (errors.PayloadTooLarge("x"), 413, "too_large"),
        (InputTooLarge("x"), 413, "too_large"),
        (TooManyPixels("x"), 413, "too_large"),
        (NotAnImage("x"), 415, "not_an_image"),
        (UnreadableImage("x"), 422, "unreadable_image"),
        (UnsupportedImage("x"), 422, "unreadable_image"),
        (errors.Overloaded("x"), 429, "overloaded"),
        (errors.ImageHostFailed("x"), 502, "image_host_failed"),
        (errors.ModelFailed("x"), 502, "model_error"),
        (TensorCodecError("x"), 502, "model_error"),
        (errors.ModelUnavailable("x"), 503, "model_unavailable"),
        (errors.ModelDeadlineExceeded("x"), 504, "deadline_exceeded"),
        (errors.ImageHostTimeout("x"), 504, "image_host_timeout"),
        (HTTPException(400), 400, "bad_request"),
        (HTTPException(404), 404, "not_found"),
        (HTTPException(405), 405, "method_not_allowed"),
        (HTTPException(418), 500, "internal"),
        (errors.GatewayError("secret detail"), 500, "internal"),
        (RuntimeError("secret detail"), 500, "internal"),
    ],
)
def test_each_error_has_one_status_and_the_same_shape(exc: Exception, status: int, code: str) -> None:
    response = errors.error_response(exc)
    assert response.status_code == status
    body = json.loads(bytes(response.body))
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    if status == 500:
        assert "secret detail" not in body["error"]["message"]


def test_describe_names_each_part_of_the_answer() -> None:
    answer = errors.describe(TensorCodecError("dtype 99 is not a tensor type"))
    assert (answer.status, answer.code, answer.retry_after) == (502, "model_error", None)
    assert answer.message == "the model's answer cannot be read: dtype 99 is not a tensor type"
    hung_up = errors.describe(ClientDisconnect())
    assert hung_up.message == "the client closed the connection before the whole body"
    assert errors.describe(HTTPException(404, "no asset named x")).message == "no asset named x"


@pytest.mark.parametrize(
    ("exc", "seconds"), [(errors.Overloaded("x"), "1"), (errors.ModelUnavailable("x"), "5")]
)
def test_retryable_errors_say_when_to_retry(exc: Exception, seconds: str) -> None:
    assert errors.error_response(exc).headers["retry-after"] == seconds


def _subclasses(cls: type[Exception]) -> list[type[Exception]]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


@pytest.mark.parametrize("cls", _subclasses(errors.GatewayError) + _subclasses(PreprocessingError))
def test_every_error_of_the_gateway_and_the_library_has_its_row(cls: type[Exception]) -> None:
    # None of them may reach a client as a 500 "internal" by falling through the table.
    assert errors.kind_of(cls("x")) is not errors.INTERNAL


def test_no_row_is_hidden_behind_an_earlier_one() -> None:
    for kind in errors.ERRORS:
        for cls in kind.kinds:
            exc = HTTPException(kind.status) if cls is HTTPException else cls("x")
            assert errors.kind_of(exc) is kind, (cls, kind.code)


def test_the_error_tree_in_the_docstring_matches_the_table() -> None:
    lines = (errors.__doc__ or "").splitlines()
    for cls in _subclasses(errors.GatewayError):
        kind = errors.kind_of(cls("x"))
        line = next(line for line in lines if f" {cls.__name__} " in line)
        assert f"{kind.status} {kind.code}:" in line


def test_the_api_description_of_each_status_comes_from_the_table() -> None:
    assert "`image_host_failed`" in openapi.status_meaning(502)
    assert "`model_error`" in openapi.status_meaning(502)
    assert "Retry-After" in openapi.status_meaning(503)
    assert "Retry-After" not in openapi.status_meaning(504)
    assert openapi.error_codes()[-1] == "internal"


async def _raise_runtime_error(self: object, request: object) -> None:
    raise RuntimeError("secret detail")


async def _raise_bare_gateway_error(self: object, request: object) -> None:
    raise errors.GatewayError("secret detail")


@pytest.mark.parametrize(
    ("broken", "kind"),
    [(_raise_runtime_error, RuntimeError), (_raise_bare_gateway_error, errors.GatewayError)],
    ids=["unknown-exception", "error-without-a-row"],
)
def test_an_unexpected_error_is_a_500_whose_traceback_is_logged_once(
    run_gateway: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    broken: Callable[..., Any],
    kind: type[Exception],
) -> None:
    monkeypatch.setattr(routes.Api, "healthz", broken)
    gateway = run_gateway(parse_settings([], {"TF_SERVING_HOST": "127.0.0.1:9"}))
    # uvicorn logs the errors Starlette re-raises on its own logger, which does not propagate, and
    # only once the answer is sent: wait for a first record, then a while for a second one.
    server_log = logging.getLogger("uvicorn.error")
    server_log.addHandler(caplog.handler)

    def logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], kind)]

    try:
        answer = httpx.get(f"{gateway.url}/healthz")
        deadline = time.monotonic() + 10
        while not logged() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        server_log.removeHandler(caplog.handler)
    assert answer.status_code == 500
    assert answer.json() == {"error": {"code": "internal", "message": errors.describe(kind("x")).message}}
    assert len(logged()) == 1, [r.getMessage() for r in logged()]
