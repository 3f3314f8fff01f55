"""CORS: which other origins' pages may call the gateway from a browser (GATEWAY_CORS_ORIGINS).

Off by default: browsers then let only the gateway's own page read its answers. With origins
set, `Cors` answers their preflights itself (before API keys are asked for: a preflight never
carries one) and marks the answers to their requests readable. A preflight from another origin,
or asking for a method or header not allowed here, is refused 400 in the route's error shape.

`*` lets a page of any origin call. The gateway uses no cookies, so that hands no one a user's
credentials: with API keys on, a page still has to send a key it was given.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import BadRequest

ANY_ORIGIN = "*"
ALLOWED_METHODS = ("GET", "POST")
# What the gateway's clients send beyond the CORS-safelisted headers: JSON bodies, API keys,
# request ids and trace context, and KServe v2's binary tensor extension.
ALLOWED_HEADERS = (
    "Content-Type",
    "Authorization",
    "X-API-Key",
    "X-Request-ID",
    "traceparent",
    "tracestate",
    "Inference-Header-Content-Length",
)
# What a page may read of an answer beyond the CORS-safelisted headers.
EXPOSED_HEADERS = ("X-Request-ID", "X-Model-Version", "Retry-After", "Inference-Header-Content-Length")
# How long a browser may keep a preflight's answer, seconds (Chromium keeps at most 7200).
MAX_AGE = 600

_SAFELISTED = frozenset({"accept", "accept-language", "content-language", "content-type"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_origin(text: str) -> str:
    """`text` as a browser writes it in an Origin header: `scheme://host[:port]`, lowercase,
    without the scheme's default port; ValueError says what is wrong with it."""
    raw = text.strip()
    if raw == ANY_ORIGIN:
        return ANY_ORIGIN
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise ValueError(f"{raw[:100]!r} is not an origin like https://shop.example.com") from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{raw[:100]!r}: an origin is http:// or https://, host and optional port")
    if not host or parts.username is not None or parts.password is not None:
        raise ValueError(f"{raw[:100]!r}: an origin has a host name and no user name")
    if parts.path or parts.query or parts.fragment or raw.endswith(("?", "#")):
        raise ValueError(f"{raw[:100]!r}: an origin has no path, not even '/' (https://shop.example.com)")
    if not host.isascii() or any(c.isspace() for c in host):
        raise ValueError(f"{raw[:100]!r}: write an international host name in its xn-- form")
    shown_host = f"[{host}]" if ":" in host else host
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{shown_host}"
    return f"{scheme}://{shown_host}:{port}"


def parse_origins(text: str) -> tuple[str, ...]:
    """The comma-separated origins of GATEWAY_CORS_ORIGINS (ValueError names a bad one)."""
    origins = tuple(dict.fromkeys(parse_origin(part) for part in text.split(",") if part.strip()))
    if ANY_ORIGIN in origins and len(origins) > 1:
        raise ValueError("'*' allows every origin: give it alone, or list origins")
    return origins


OnRefused = Callable[[Request, Exception], Awaitable[Response]]


class Cors:
    """ASGI middleware answering preflights and marking answers readable for `origins`."""

    def __init__(
        self, app: ASGIApp, origins: Sequence[str], on_refused: OnRefused, extra_headers: Sequence[str] = ()
    ) -> None:
        """`extra_headers`: request headers to allow beside ALLOWED_HEADERS (configured ones)."""
        self.app = app
        self.any_origin = ANY_ORIGIN in origins
        self.origins = frozenset(origins)
        self.on_refused = on_refused
        self.allowed_headers = tuple(dict.fromkeys((*ALLOWED_HEADERS, *extra_headers)))
        self._allowed_lower = {h.lower() for h in self.allowed_headers} | _SAFELISTED

    def _allows(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:  # not a cross-origin request from a browser
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(scope, receive, send, headers, origin)
            return

        async def readable(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer = MutableHeaders(scope=message)
                answer.add_vary_header("Origin")
                if self._allows(origin):
                    answer["Access-Control-Allow-Origin"] = ANY_ORIGIN if self.any_origin else origin
                    answer["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)
            await send(message)

        await self.app(scope, receive, readable)

    async def _preflight(
        self, scope: Scope, receive: Receive, send: Send, headers: Headers, origin: str
    ) -> None:
        method = headers["access-control-request-method"]
        asked = [h.strip().lower() for h in headers.get("access-control-request-headers", "").split(",")]
        refused_headers = [h for h in asked if h and h not in self._allowed_lower]
        problem = None
        if not self._allows(origin):
            problem = f"origin {origin[:100]!r} may not call this gateway"
        elif method not in ALLOWED_METHODS:
            problem = f"method {method[:20]!r} is not allowed: {', '.join(ALLOWED_METHODS)}"
        elif refused_headers:
            problem = f"header {refused_headers[0][:60]!r} is not allowed: {', '.join(self.allowed_headers)}"
        if problem is not None:
            refused = BadRequest(f"CORS preflight refused: {problem}")
            response = await self.on_refused(Request(scope, receive), refused)
            response.headers.add_vary_header("Origin")
            await response(scope, receive, send)
            return
        response = Response(
            status_code=204,
            headers={
                "Access-Control-Allow-Origin": ANY_ORIGIN if self.any_origin else origin,
                "Access-Control-Allow-Methods": ", ".join(ALLOWED_METHODS),
                "Access-Control-Allow-Headers": ", ".join(self.allowed_headers),
                "Access-Control-Max-Age": str(MAX_AGE),
                "Vary": "Origin",
            },
        )
        await response(scope, receive, send)
