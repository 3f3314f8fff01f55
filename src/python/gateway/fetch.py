"""Fetching image URLs for users without letting them reach inside the network (SSRF-safe).

http and https only; no credentials in the URL; every address checked and connected to directly
(`guarded_transport`); redirects followed by hand, at most `max_redirects`, each hop re-checked the
same way; connect, read and total timeouts; the byte limit enforced while the body streams in.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from gateway.addresses import AddressPolicy, IPNetwork
from gateway.errors import BadRequest, ImageHostFailed, ImageHostTimeout, PayloadTooLarge, UrlNotAllowed
from gateway.guarded_transport import GuardedTransport, Resolver, system_resolver

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_URL_LENGTH = 4096


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = 20 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 15.0
    max_redirects: int = 3
    allow_networks: tuple[IPNetwork, ...] = ()


class Fetcher:
    """Downloads one image per call; one instance (one connection pool) per process."""

    def __init__(self, policy: FetchPolicy, resolver: Resolver = system_resolver) -> None:
        self._policy = policy
        self._client = httpx.AsyncClient(
            transport=GuardedTransport(AddressPolicy(policy.allow_networks), resolver),
            follow_redirects=False,
            timeout=httpx.Timeout(
                connect=policy.connect_timeout,
                read=policy.read_timeout,
                write=policy.read_timeout,
                pool=policy.connect_timeout,
            ),
            # identity: the byte limit then bounds what is held in memory (no gzip bombs).
            headers={
                "User-Agent": "clothing-gateway/1 (image fetcher)",
                "Accept": "image/*",
                "Accept-Encoding": "identity",
            },
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, url: str) -> bytes:
        """The body at `url`, or a GatewayError saying in words why not."""
        current = check_url(url)
        try:
            async with asyncio.timeout(self._policy.total_timeout):
                for _ in range(self._policy.max_redirects + 1):
                    location = await self._get(current)
                    if isinstance(location, bytes):
                        return location
                    current = check_url(str(current.join(location)))
        except TimeoutError:
            raise ImageHostTimeout(
                f"the image host took longer than {self._policy.total_timeout:g} s"
            ) from None
        raise ImageHostFailed(f"the image URL redirected more than {self._policy.max_redirects} times")

    async def _get(self, url: httpx.URL) -> bytes | str:
        """The body, or the Location of a redirect."""
        host = url.host
        try:
            async with self._client.stream("GET", url) as response:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise ImageHostFailed(f"{host} answered a redirect without a Location")
                    return str(location)
                if response.status_code != 200:
                    raise ImageHostFailed(f"the image host {host} answered HTTP {response.status_code}")
                return await self._read_limited(response)
        except httpx.TimeoutException:
            raise ImageHostTimeout(f"the image host {host} timed out") from None
        except httpx.HTTPError as e:
            raise ImageHostFailed(f"the image host {host} failed: {type(e).__name__} {e}".rstrip()) from None

    async def _read_limited(self, response: httpx.Response) -> bytes:
        limit = self._policy.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"the image is {declared} bytes; the limit is {limit}")
        encoding = response.headers.get("content-encoding", "identity").lower()
        if encoding != "identity":
            raise ImageHostFailed(f"the image host sent a {encoding}-compressed body although asked not to")
        chunks = []
        received = 0
        async for chunk in response.aiter_raw():
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(f"the image is more than {limit} bytes, the limit")
            chunks.append(chunk)
        return b"".join(chunks)


def check_url(text: str) -> httpx.URL:
    """Parse an image URL and refuse what is never fetched (before any network traffic)."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("the image URL is empty")
    if len(text) > _MAX_URL_LENGTH:
        raise BadRequest(f"the image URL is longer than {_MAX_URL_LENGTH} characters")
    try:
        url = httpx.URL(text.strip())
    except (httpx.InvalidURL, ValueError, TypeError) as e:
        raise BadRequest(f"the image URL is not valid: {e}") from None
    if url.scheme not in ("http", "https"):
        raise UrlNotAllowed(
            f"only http and https image URLs are fetched, not {url.scheme or 'a relative URL'}"
        )
    if not url.host:
        raise BadRequest("the image URL has no host")
    if url.userinfo:
        raise UrlNotAllowed("image URLs with a user name or password are not fetched")
    return url
