"""API keys: who is calling (the id of the key that authenticated this request)."""

from __future__ import annotations

from contextvars import ContextVar

_key_id: ContextVar[str | None] = ContextVar("gateway_api_key_id", default=None)


def current_key_id() -> str | None:
    """The id of the API key that authenticated this request.

    None when API keys are off, when the route is open without a key, or outside a request.
    """
    return _key_id.get()
