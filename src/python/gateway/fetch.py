"""Fetching image URLs for users without letting them reach inside the network (SSRF-safe).

http and https only; no credentials in the URL; address literals checked here, host names checked
and connected to by address (`guarded_resolver`); redirects followed by hand, at most
`max_redirects`, each hop re-checked the same way; connect, read and total timeouts; the byte limit
enforced while the body streams in. aiohttp does the HTTP: its C parser keeps the fetch at a
fraction of the CPU a pure-Python client costs per image (docs/benchmarks.md, "Gateway").
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from clothing_preproc.config import DEFAULT_LIMITS
from gateway.addresses import AddressPolicy, IPNetwork, parse_address
from gateway.errors import BadRequest, ImageHostFailed, ImageHostTimeout, PayloadTooLarge, UrlNotAllowed
from gateway.guarded_resolver import GuardedResolver, Resolver, refuse_literal, system_resolver
from gateway.name_lookup import LookupLimits

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_URL_LENGTH = 4096


@dataclass(frozen=True)
class FetchPolicy:
    """How image URLs are fetched: timeouts, redirects, the private networks allowed after all, and
    the bounds of the host name lookups (gateway.name_lookup)."""

    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 15.0  # across redirects
    max_redirects: int = 3
    allow_networks: tuple[IPNetwork, ...] = ()
    lookups: LookupLimits = field(default_factory=LookupLimits)


class Fetcher:
    """Downloads one image per call; one instance (one connection pool) per process.

    Create it inside the running event loop (the app's lifespan); `aclose()` it at shutdown.
    """

    def __init__(
        self,
        policy: FetchPolicy,
        resolver: Resolver = system_resolver,
        *,
        max_bytes: int = DEFAULT_LIMITS.max_bytes,
    ) -> None:
        """`max_bytes`: the largest image body read (the gateway's image limit)."""
        self._policy = policy
        self._max_bytes = max_bytes
        self._addresses = AddressPolicy(policy.allow_networks)
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self._addresses, resolver),
            # Resolve (and check) again for every new connection rather than trusting a cache.
            use_dns_cache=False,
            limit=100,
            keepalive_timeout=30.0,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None,  # the total is enforced in fetch(), across redirects
                connect=policy.connect_timeout,
                sock_connect=policy.connect_timeout,
                sock_read=policy.read_timeout,
            ),
            # identity: the byte limit then bounds what is held in memory (no gzip bombs).
            headers={
                "User-Agent": "clothing-gateway/1 (image fetcher)",
                "Accept": "image/*",
                "Accept-Encoding": "identity",
            },
            auto_decompress=False,
            # One user's image host must not set cookies that go along with another user's fetch,
            # and proxy variables must not route fetches around the address checks.
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._session.close()

    async def fetch(self, url: str) -> bytes:
        """The body at `url`, or a GatewayError saying in words why not."""
        current = self._check(url)
        try:
            async with asyncio.timeout(self._policy.total_timeout):
                for _ in range(self._policy.max_redirects + 1):
                    location = await self._get(current)
                    if isinstance(location, bytes):
                        return location
                    try:
                        target = str(current.join(URL(location)))
                    except ValueError:
                        raise ImageHostFailed(f"{current.host} redirected to an invalid URL") from None
                    current = self._check(target)
        except TimeoutError:
            raise ImageHostTimeout(
                f"the image host took longer than {self._policy.total_timeout:g} s"
            ) from None
        raise ImageHostFailed(f"the image URL redirected more than {self._policy.max_redirects} times")

    def _check(self, text: str) -> URL:
        url = check_url(text)
        assert url.host is not None
        refuse_literal(self._addresses, url.host)
        return url

    async def _get(self, url: URL) -> bytes | str:
        """The body, or the Location of a redirect."""
        host = url.host
        try:
            async with self._session.get(url, allow_redirects=False) as response:
                if response.status in _REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise ImageHostFailed(f"{host} answered a redirect without a Location")
                    return location
                if response.status != 200:
                    raise ImageHostFailed(f"the image host {host} answered HTTP {response.status}")
                return await self._read_limited(response)
        except TimeoutError:
            # aiohttp's connect and read timeouts (the total one surfaces in fetch() instead).
            raise ImageHostTimeout(f"the image host {host} timed out") from None
        except aiohttp.InvalidURL as e:
            raise BadRequest(f"the image URL is not valid: {e}") from None
        except aiohttp.ClientConnectorError as e:
            reason = e.os_error.strerror or str(e.os_error) or type(e.os_error).__name__
            raise ImageHostFailed(f"the image host {host} could not be reached ({reason})") from None
        except aiohttp.ClientError as e:
            raise ImageHostFailed(f"the image host {host} failed: {type(e).__name__} {e}".rstrip()) from None

    async def _read_limited(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self._max_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the image is {declared} bytes; the limit is {limit}")
        encoding = response.headers.get("Content-Encoding", "identity").lower()
        if encoding != "identity":
            raise ImageHostFailed(f"the image host sent a {encoding}-compressed body although asked not to")
        chunks = []
        received = 0
        async for chunk in response.content.iter_any():
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(f"the image is more than {limit} bytes, the limit")
            chunks.append(chunk)
        return b"".join(chunks)


def check_url(text: str) -> URL:
    """Parse an image URL and refuse what is never fetched (before any network traffic)."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("the image URL is empty")
    text = text.strip()
    if len(text) > _MAX_URL_LENGTH:
        raise BadRequest(f"the image URL is longer than {_MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise BadRequest("the image URL contains spaces or control characters; encode them")
    try:
        url = URL(text)
        port = url.port  # yarl checks the port only when asked
    except (ValueError, TypeError, UnicodeError) as e:
        raise BadRequest(f"the image URL is not valid: {e}") from None
    if url.scheme not in ("http", "https"):
        raise UrlNotAllowed(
            f"only http and https image URLs are fetched, not {url.scheme or 'a relative URL'}"
        )
    if not url.host or port is None:
        raise BadRequest("the image URL has no host")
    if url.user is not None or url.password is not None:
        raise UrlNotAllowed("image URLs with a user name or password are not fetched")
    if parse_address(url.host) is None and _legacy_ipv4(url.host):
        # 2130706433, 0x7f000001, 0177.0.0.1, 127.1: what inet_aton reads as an address. Refused
        # rather than translated, so no spelling of an address can differ between check and use.
        raise UrlNotAllowed(
            f"the image host {url.host} is an IPv4 address in a non-standard form; write it as a.b.c.d"
        )
    return url


def _legacy_ipv4(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except (OSError, ValueError):
        return False
    return True
