"""API keys: which requests need one, how a presented key is checked, and who is calling.

Off unless GATEWAY_API_KEYS_FILE names a key file (`api_keys.key_file`: ids and SHA-256 digests,
read once at start). `RequireKey` then sits in front of the routes: a request to any path but
the open ones must carry a key, as `Authorization: Bearer <key>` or `X-API-Key: <key>`; none or
an unknown one is 401 (with `WWW-Authenticate: Bearer`), a revoked one 403. Every route is
protected unless listed in `OPEN_PATHS`, so a route added later is closed until someone opens it.
`current_key_id()` says which key let the current request in.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api_keys.key_file import KeyEntry, digest_of, is_key_shaped
from gateway.errors import KeyRevoked, Unauthorized

_key_id: ContextVar[str | None] = ContextVar("gateway_api_key_id", default=None)

# Open without a key: the page and its assets (a browser loads them before anyone can type a
# key), liveness and readiness (kubelet and load balancer probes carry no key; they tell only
# whether the gateway is up), KServe v2's two health routes (its probes, the same) and the API's
# description. /metrics on the gateway's port needs a key (it shows the traffic); on
# GATEWAY_METRICS_PORT, a separate app, it has none.
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/openapi.json", "/v2/health/live", "/v2/health/ready"})
_STATIC_PREFIX = "/static/"

_BEARER = "bearer"
HOW_TO_SEND = "send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


def current_key_id() -> str | None:
    """The id of the API key that authenticated this request.

    None when API keys are off, when the route is open without a key, or outside a request.
    """
    return _key_id.get()


def is_open(path: str) -> bool:
    """Whether `path` is served without a key (a static asset's name has no slash)."""
    if path in OPEN_PATHS:
        return True
    return path.startswith(_STATIC_PREFIX) and "/" not in path[len(_STATIC_PREFIX) :]


class KeyTable:
    """The keys of the file, checked against what a client presents."""

    def __init__(self, entries: Iterable[KeyEntry]) -> None:
        self._by_digest = {entry.digest: entry for entry in entries}

    def __len__(self) -> int:
        return len(self._by_digest)

    def check(self, presented: str | None) -> str:
        """The id of the key `presented`; `Unauthorized` when there is none or it is unknown,
        `KeyRevoked` when it was revoked."""
        if presented is None:
            raise Unauthorized(f"this route needs an API key: {HOW_TO_SEND}")
        if not is_key_shaped(presented):
            raise Unauthorized("that is not an API key: keys are 1 to 256 visible ASCII characters")
        digest = digest_of(presented)
        # The dict is keyed by digest, so a lookup's time depends on the SHA-256 of what the
        # client sent: to learn a stored digest byte by byte from how soon an equality test
        # stops, a client would have to send keys whose digests begin with chosen bytes, i.e.
        # find SHA-256 preimages. The lookup only finds the candidate; what decides is
        # hmac.compare_digest, whose time does not depend on where the two digests differ.
        entry = self._by_digest.get(digest)
        if entry is None or not hmac.compare_digest(entry.digest, digest):
            raise Unauthorized("unknown API key")
        if entry.revoked:
            raise KeyRevoked(f"API key {entry.key_id!r} has been revoked")
        return entry.key_id


def presented_key(headers: Headers) -> str | None:
    """The key a request carries: `Authorization: Bearer <key>` or `X-API-Key: <key>` (None:
    neither header). A header that is there must carry a key: another Authorization scheme, or an
    empty key, is refused even beside a good key in the other header, and so are two different
    keys (one credential that does not check out fails the request)."""
    found: list[str] = []
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != _BEARER or not credentials.strip():
            raise Unauthorized(f"the Authorization header is not 'Bearer <key>': {HOW_TO_SEND}")
        found.append(credentials.strip())
    api_key = headers.get("x-api-key")
    if api_key is not None:
        if not api_key.strip():
            raise Unauthorized(f"the X-API-Key header is empty: {HOW_TO_SEND}")
        found.append(api_key.strip())
    if len(set(found)) > 1:
        raise Unauthorized("Authorization and X-API-Key carry different keys: send one")
    return found[0] if found else None


OnRefused = Callable[[Request, Exception], Awaitable[Response]]


class RequireKey:
    """ASGI middleware: the request's key checked before any route but the open ones runs.
    Refusals are answered by `on_refused` (the app's error handler: metrics, the error shape
    of the route's protocol)."""

    def __init__(self, app: ASGIApp, keys: KeyTable, on_refused: OnRefused) -> None:
        self.app = app
        self.keys = keys
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            key_id = self.keys.check(presented_key(Headers(scope=scope)))
        except (Unauthorized, KeyRevoked) as refused:
            response = await self.on_refused(Request(scope, receive), refused)
            await response(scope, receive, send)
            return
        token = _key_id.set(key_id)
        try:
            await self.app(scope, receive, send)
        finally:
            _key_id.reset(token)
