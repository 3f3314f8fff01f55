"""Request ids: one per HTTP request, the client's `X-Request-ID` when it is sane, else a new one.

`RequestIds` (the app's outermost middleware) sets it for the request's duration, returns it as
`X-Request-ID` on every answer, errors included, and `RequestIdFilter` puts it in every log line
written meanwhile (`current_request_id()` reads it anywhere in the request's code and threads it
hands work to through `contextvars`). `log_config(level)` is uvicorn's log configuration with the id
in every line, the gateway's own logger included.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode("latin-1")

# A client's id is taken as it is only when it is short and made of characters that need no
# escaping in a header, a log line or a JSON string (UUIDs, hex, base64, `svc:1234/abc`); anything
# else is replaced, never echoed: a hostile id must not reach the log or another service's headers.
MAX_LENGTH = 128
_SANE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:+=@/-]*")

_current: ContextVar[str] = ContextVar("request_id", default="")


def current_request_id() -> str:
    """The id of the HTTP request being handled; "" outside one."""
    return _current.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def accepted_id(value: bytes | None) -> str:
    """`value` (a client's X-Request-ID) when it is sane, else a new id."""
    if value is not None and len(value) <= MAX_LENGTH and _SANE.fullmatch(value):
        return value.decode("ascii")
    return new_request_id()


class RequestIds:
    """ASGI middleware: the request's id, set while it is handled and returned on its answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for key, value in scope["headers"] if key == _HEADER_KEY), None)
        request_id = accepted_id(given)
        header = (_HEADER_KEY, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _HEADER_KEY]
                headers.append(header)
                message = {**message, "headers": headers}
            await send(message)

        token = _current.set(request_id)
        await self.app(scope, receive, send_with_id)
        # Reset only after a normal return: an exception leaves the id set so that the server's
        # traceback line ("Exception in ASGI application") carries it too. uvicorn runs each
        # request in a task of its own, whose context ends with it.
        _current.reset(token)


class RequestIdFilter(logging.Filter):
    """Gives every record `request_id`: the current request's, or "-" outside a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _current.get() or "-"
        return True


class OncePerMinute(logging.Filter):
    """Lets one record per logger and message template through per minute: the OpenTelemetry
    exporter's, whose collector being down would otherwise cost a line per batch and retry."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        key = (record.name, record.msg)
        last = self._last.get(key)
        if last is not None and now - last < 60.0:
            return False
        self._last[key] = now
        return True


# uvicorn's formats with the request id after the level.
_DEFAULT_FORMAT = "%(levelprefix)s [%(request_id)s] %(message)s"
_ACCESS_FORMAT = '%(levelprefix)s [%(request_id)s] %(client_addr)s - "%(request_line)s" %(status_code)s'


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's log configuration (its formatters and handlers) with the request id in every line,
    and the gateway's own logger ("gateway") and OpenTelemetry's warnings written to the same
    stream as uvicorn's."""
    filters = {"request_id": {"()": RequestIdFilter}, "once_per_minute": {"()": OncePerMinute}}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": filters,
        "formatters": {
            "default": {"()": "uvicorn.logging.DefaultFormatter", "fmt": _DEFAULT_FORMAT, "use_colors": None},
            "access": {"()": "uvicorn.logging.AccessFormatter", "fmt": _ACCESS_FORMAT},
        },
        "handlers": {
            "default": {
                "formatter": "default",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "filters": ["request_id"],
            },
            "once_per_minute": {
                "formatter": "default",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "filters": ["request_id", "once_per_minute"],
            },
            "access": {
                "formatter": "access",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "filters": ["request_id"],
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": ["access"], "level": level.upper(), "propagate": False},
            "gateway": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "opentelemetry": {"handlers": ["once_per_minute"], "level": "WARNING", "propagate": False},
        },
    }
