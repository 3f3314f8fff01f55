"""The SSRF matrix: a real HTTP server on loopback and DNS answers the test controls.

The image host listens on 127.0.0.1 and a "secret" internal service on 127.0.0.2. The fetcher may
reach only 127.0.0.1 (the development allow-list); every way of steering it elsewhere must fail
without the secret service ever being contacted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from gateway.errors import (
    BadRequest,
    ImageHostFailed,
    ImageHostTimeout,
    PayloadTooLarge,
    UrlNotAllowed,
)
from gateway.fetch import Fetcher, FetchPolicy
from testing_support.image_host import ImageHost, Reply, image_bytes
from testing_support.in_process_gateway import resolver_from

pytestmark = pytest.mark.anyio

JPEG = image_bytes()
ONLY_127_0_0_1 = (ipaddress.ip_network("127.0.0.1/32"),)


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture()
def secret() -> Iterator[ImageHost]:
    host = ImageHost("127.0.0.2")
    host.routes["/"] = Reply(200, b"internal secrets")
    try:
        yield host
    finally:
        host.close()
        assert host.hits == [], "the internal service was contacted"


def fetcher(
    answers: dict[str, list[str]],
    calls: list[str] | None = None,
    max_bytes: int = 20 * 1024 * 1024,
    **policy: object,
) -> Fetcher:
    settings = FetchPolicy(allow_networks=ONLY_127_0_0_1, **policy)  # type: ignore[arg-type]
    return Fetcher(settings, resolver_from(answers, calls), max_bytes=max_bytes)


async def test_an_allowed_host_is_fetched(image_host: ImageHost) -> None:
    image_host.routes["/shirt.jpg"] = Reply(200, JPEG, {"Content-Type": "image/jpeg"})
    f = fetcher({"images.test": ["127.0.0.1"]})
    try:
        assert await f.fetch(image_host.url("/shirt.jpg", "images.test")) == JPEG
    finally:
        await f.aclose()


@pytest.mark.parametrize(
    "addresses",
    [
        ["10.0.0.7"],
        ["127.0.0.2"],
        ["169.254.169.254"],
        ["::1"],
        ["::ffff:127.0.0.2"],
        ["fe80::1"],
        ["fd00::1"],
        ["224.0.0.1"],
        ["0.0.0.0"],
        ["64:ff9b::a9fe:a9fe"],
        ["2002:7f00:2::"],
        # A name with one public and one internal address is refused as a whole.
        ["127.0.0.1", "127.0.0.2"],
    ],
    ids=lambda a: ",".join(a),
)
async def test_names_resolving_inside_are_refused(secret: ImageHost, addresses: list[str]) -> None:
    f = fetcher({"evil.test": addresses})
    try:
        with pytest.raises(UrlNotAllowed) as refused:
            await f.fetch(secret.url("/", "evil.test"))
        # The answer says why, never where the name points; the address is for the log alone.
        assert refused.value.message == "the image host resolves to a private, loopback or reserved address"
        assert "evil.test resolves to" in (refused.value.detail or "")
    finally:
        await f.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.2:{port}/",
        "http://[::1]:{port}/",
        "http://[::ffff:127.0.0.2]:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0:{port}/",
        # Legacy spellings of 127.0.0.2 that inet_aton (and so some resolvers) accept.
        "http://2130706434:{port}/",
        "http://0x7f000002:{port}/",
        "http://0177.0.0.2:{port}/",
        "http://127.2:{port}/",
    ],
)
async def test_address_literals_inside_are_refused(secret: ImageHost, url: str) -> None:
    calls: list[str] = []
    f = fetcher({}, calls)
    try:
        with pytest.raises(UrlNotAllowed):
            await f.fetch(url.format(port=secret.port))
    finally:
        await f.aclose()
    assert calls == [], "an address literal needs no DNS lookup"


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://images.test/x.jpg",
        "gopher://images.test/",
        "data:image/png;base64,iVBORw0KGgo=",
        "//images.test/x.jpg",
        "http://user:pass@images.test/x.jpg",
    ],
)
async def test_other_schemes_and_credentials_are_refused(url: str) -> None:
    calls: list[str] = []
    f = fetcher({"images.test": ["127.0.0.1"]}, calls)
    try:
        with pytest.raises(UrlNotAllowed):
            await f.fetch(url)
    finally:
        await f.aclose()
    assert calls == []


@pytest.mark.parametrize("url", ["", "   ", "http://", "not a url at all", "http://[::1"])
async def test_malformed_urls_are_bad_requests(url: str) -> None:
    f = fetcher({})
    try:
        with pytest.raises(BadRequest):
            await f.fetch(url)
    finally:
        await f.aclose()


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/",
        "http://internal.test:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
    ],
)
async def test_every_redirect_hop_is_checked(image_host: ImageHost, secret: ImageHost, target: str) -> None:
    image_host.routes["/go"] = Reply(302, b"", {"Location": target.format(port=secret.port)})
    f = fetcher({"images.test": ["127.0.0.1"], "internal.test": ["127.0.0.2"]})
    try:
        with pytest.raises(UrlNotAllowed):
            await f.fetch(image_host.url("/go", "images.test"))
    finally:
        await f.aclose()
    assert image_host.hits == ["/go"]


async def test_allowed_redirects_are_followed_up_to_the_limit(image_host: ImageHost) -> None:
    image_host.routes["/a"] = Reply(301, b"", {"Location": "/b"})
    image_host.routes["/b"] = Reply(307, b"", {"Location": image_host.url("/c", "images.test")})
    image_host.routes["/c"] = Reply(200, JPEG)
    image_host.routes["/loop"] = Reply(302, b"", {"Location": "/loop"})
    f = fetcher({"images.test": ["127.0.0.1"]}, max_redirects=2)
    try:
        assert await f.fetch(image_host.url("/a", "images.test")) == JPEG
        with pytest.raises(ImageHostFailed, match="redirected more than 2 times"):
            await f.fetch(image_host.url("/loop", "images.test"))
    finally:
        await f.aclose()
    assert image_host.hits.count("/loop") == 3


async def test_dns_rebinding_cannot_move_the_connection(image_host: ImageHost, secret: ImageHost) -> None:
    """The first answer is checked and connected to; a later, different answer is never used. The
    next image from the same host rides the kept-alive connection (no new handshake) without
    resolving the name again, so the changed answer cannot redirect it either."""
    image_host.routes["/shirt.jpg"] = Reply(200, JPEG)
    image_host.routes["/trousers.jpg"] = Reply(200, JPEG[::-1])
    answers = iter([["127.0.0.1"], ["127.0.0.2"], ["127.0.0.2"]])
    calls: list[str] = []

    async def rebinding(name: str, port: int) -> list[str]:
        calls.append(name)
        return next(answers)

    f = Fetcher(FetchPolicy(allow_networks=ONLY_127_0_0_1), rebinding)
    try:
        assert await f.fetch(image_host.url("/shirt.jpg", "rebind.test")) == JPEG
        assert await f.fetch(image_host.url("/trousers.jpg", "rebind.test")) == JPEG[::-1]
    finally:
        await f.aclose()
    assert calls == ["rebind.test"], "resolved once per connection; the second image reuses it"
    assert image_host.hits == ["/shirt.jpg", "/trousers.jpg"]


async def test_rebinding_to_inside_on_a_new_connection_is_refused(secret: ImageHost) -> None:
    answers = iter([["127.0.0.2"]])

    async def rebinding(name: str, port: int) -> list[str]:
        return next(answers)

    f = Fetcher(FetchPolicy(allow_networks=ONLY_127_0_0_1), rebinding)
    try:
        with pytest.raises(UrlNotAllowed):
            await f.fetch(secret.url("/", "rebind.test"))
    finally:
        await f.aclose()


async def test_the_byte_limit_holds_with_and_without_content_length(image_host: ImageHost) -> None:
    big = b"\xff" * 300_000
    image_host.routes["/declared"] = Reply(200, big)
    image_host.routes["/chunked"] = Reply(200, big, chunked=True)
    f = fetcher({"images.test": ["127.0.0.1"]}, max_bytes=100_000)
    try:
        with pytest.raises(PayloadTooLarge, match="300000 bytes"):
            await f.fetch(image_host.url("/declared", "images.test"))
        with pytest.raises(PayloadTooLarge, match="more than 100000 bytes"):
            await f.fetch(image_host.url("/chunked", "images.test"))
    finally:
        await f.aclose()


async def test_host_failures_are_reported_in_words(image_host: ImageHost) -> None:
    image_host.routes["/gone"] = Reply(404, b"no")
    image_host.routes["/gzip"] = Reply(200, b"\x1f\x8b", {"Content-Encoding": "gzip"})
    f = fetcher({"images.test": ["127.0.0.1"], "down.test": ["127.0.0.1"]})
    try:
        with pytest.raises(ImageHostFailed, match="answered HTTP 404"):
            await f.fetch(image_host.url("/gone", "images.test"))
        with pytest.raises(ImageHostFailed, match="cannot be resolved"):
            await f.fetch("http://nowhere.test/x.jpg")
        with pytest.raises(ImageHostFailed, match="gzip"):
            await f.fetch(image_host.url("/gzip", "images.test"))
    finally:
        await f.aclose()
    image_host.close()
    f = fetcher({"images.test": ["127.0.0.1"]})
    try:
        with pytest.raises(ImageHostFailed, match="could not be reached"):
            await f.fetch(image_host.url("/gone", "images.test"))
    finally:
        await f.aclose()


async def test_a_stuck_host_times_out(image_host: ImageHost) -> None:
    import threading

    release = threading.Event()
    image_host.routes["/stuck"] = Reply(200, JPEG, hold=release)
    f = fetcher({"images.test": ["127.0.0.1"]}, read_timeout=0.3, total_timeout=5.0)
    try:
        with pytest.raises(ImageHostTimeout):
            await f.fetch(image_host.url("/stuck", "images.test"))
    finally:
        release.set()
        await f.aclose()
