from __future__ import annotations

import json

import pytest
from starlette.exceptions import HTTPException

from clothing_preproc import InputTooLarge, NotAnImage, TensorCodecError, TooManyPixels, UnreadableImage
from gateway import errors


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (errors.BadRequest("x"), 400, "bad_request"),
        (errors.UrlNotAllowed("x"), 400, "url_not_allowed"),
        (errors.PayloadTooLarge("x"), 413, "too_large"),
        (InputTooLarge("x"), 413, "too_large"),
        (TooManyPixels("x"), 413, "too_large"),
        (NotAnImage("x"), 415, "not_an_image"),
        (UnreadableImage("x"), 422, "unreadable_image"),
        (errors.Overloaded("x"), 429, "overloaded"),
        (errors.ImageHostFailed("x"), 502, "image_host_failed"),
        (errors.ModelFailed("x"), 502, "model_error"),
        (TensorCodecError("x"), 502, "model_error"),
        (errors.ModelUnavailable("x"), 503, "model_unavailable"),
        (errors.ModelDeadlineExceeded("x"), 504, "deadline_exceeded"),
        (errors.ImageHostTimeout("x"), 504, "image_host_timeout"),
        (HTTPException(404), 404, "not_found"),
        (HTTPException(405), 405, "method_not_allowed"),
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


@pytest.mark.parametrize(
    ("exc", "seconds"), [(errors.Overloaded("x"), "1"), (errors.ModelUnavailable("x"), "5")]
)
def test_retryable_errors_say_when_to_retry(exc: Exception, seconds: str) -> None:
    assert errors.error_response(exc).headers["retry-after"] == seconds


def test_the_error_tree_in_the_docstring_matches_the_classes() -> None:
    doc = errors.__doc__ or ""
    for cls in errors.GatewayError.__subclasses__() + errors.BadRequest.__subclasses__():
        assert cls.__name__ in doc
        assert f"{cls.status} {cls.code}" in doc
