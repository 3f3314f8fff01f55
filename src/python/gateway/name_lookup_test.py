"""Bounded host-name lookups with lookups that really block a thread, as a hung getaddrinfo does."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from collections.abc import Iterator

import pytest

from gateway.errors import ImageHostTimeout, describe
from gateway.fetch import Fetcher, FetchPolicy
from gateway.name_lookup import BoundedResolver, LookupLimits, domain_of
from gateway.settings import Settings, parse_settings
from testing_support.image_host import ImageHost, Reply, image_bytes

pytestmark = pytest.mark.anyio


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


class HungDns:
    """A blocking lookup: names under a hung domain block their thread until released, as a
    getaddrinfo does whose nameserver never answers; the others answer 127.0.0.1 at once."""

    def __init__(self, *hung: str) -> None:
        self.hung = hung
        self.release = threading.Event()
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, host: str, port: int) -> list[str]:
        with self._lock:
            self.calls.append(host)
        if domain_of(host) in self.hung:
            self.release.wait(60)
            raise OSError("Temporary failure in name resolution")
        return ["127.0.0.1"]


@pytest.fixture()
def hung() -> Iterator[HungDns]:
    dns = HungDns("hung.test", "stuck.example")
    yield dns
    dns.release.set()


def resolver(dns: HungDns, threads: int = 4, timeout: float = 0.5, per_domain: int = 2) -> BoundedResolver:
    return BoundedResolver(LookupLimits(threads=threads, timeout=timeout, per_domain=per_domain), dns)


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("images.example.com", "example.com"),
        ("a.b.c.evil.test", "evil.test"),
        ("example.com.", "example.com"),
        ("cdn.images.example.co.uk", "example.co.uk"),
        ("Shop.Example.COM.AU", "example.com.au"),
        ("localhost", "localhost"),
        ("x.io", "x.io"),
    ],
)
def test_domains_are_where_an_owner_starts(host: str, domain: str) -> None:
    assert domain_of(host) == domain


async def test_hung_lookups_hold_at_most_their_domains_places_and_others_resolve_at_once(
    hung: HungDns,
) -> None:
    names = resolver(hung, threads=4, timeout=0.5, per_domain=2)
    try:
        # Ten different names under one hung domain (an attacker's zone), all at once.
        stuck = [asyncio.create_task(names(f"n{i}.hung.test", 80)) for i in range(10)]
        await asyncio.sleep(0.05)
        assert names.held("hung.test") == 2, "only two threads for the hung domain"
        started = time.monotonic()
        assert await names("images.example.com", 80) == ["127.0.0.1"]
        assert time.monotonic() - started < 0.2
        for task in stuck:
            with pytest.raises(ImageHostTimeout, match="did not resolve within 0.5 s"):
                await task
        # Their requests gave up; the two threads are still blocked and still count.
        assert names.held("hung.test") == 2
        assert sum(1 for c in hung.calls if c.endswith("hung.test")) == 2
        started = time.monotonic()
        assert await names("other.example.org", 443) == ["127.0.0.1"]
        assert time.monotonic() - started < 0.2
        hung.release.set()
        for _ in range(100):
            if names.held("hung.test") == 0:
                break
            await asyncio.sleep(0.01)
        assert names.held("hung.test") == 0
    finally:
        names.close()


async def test_many_hung_domains_take_only_their_places(hung: HungDns) -> None:
    # Two hung domains × two places = four of eight threads; the rest serve everyone else.
    names = resolver(hung, threads=8, timeout=0.5, per_domain=2)
    try:
        stuck = [
            asyncio.create_task(names(f"n{i}.{domain}", 80))
            for i in range(6)
            for domain in ("hung.test", "stuck.example")
        ]
        await asyncio.sleep(0.05)
        answers = await asyncio.gather(*(names(f"img{i}.example.com", 80) for i in range(8)))
        assert answers == [["127.0.0.1"]] * 8
        results = await asyncio.gather(*stuck, return_exceptions=True)
        assert all(isinstance(r, ImageHostTimeout) for r in results)
    finally:
        names.close()


async def test_concurrent_lookups_of_one_name_share_one_thread(hung: HungDns) -> None:
    names = resolver(hung, per_domain=1)
    try:
        answers = await asyncio.gather(*(names("images.example.com", 80) for _ in range(20)))
        assert answers == [["127.0.0.1"]] * 20
        assert hung.calls.count("images.example.com") <= 2
    finally:
        names.close()


async def test_resolver_errors_pass_through_and_free_the_place(hung: HungDns) -> None:
    def failing(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    names = BoundedResolver(LookupLimits(threads=1, timeout=1, per_domain=1), failing)
    try:
        for _ in range(3):
            with pytest.raises(OSError, match="not known"):
                await names("nx.example.com", 80)
        assert names.held("example.com") == 0
    finally:
        names.close()


def test_the_lookup_timeout_stays_within_the_connect_timeout() -> None:
    assert Settings().fetch.lookups == LookupLimits(threads=32, timeout=3.0, per_domain=2)
    short = parse_settings([], {"GATEWAY_FETCH_CONNECT_TIMEOUT": "1", "GATEWAY_DNS_TIMEOUT": "3"})
    assert short.fetch.lookups.timeout == 1.0
    tuned = parse_settings(
        [], {"GATEWAY_DNS_THREADS": "4", "GATEWAY_DNS_TIMEOUT": "0.5", "GATEWAY_DNS_MAX_PER_DOMAIN": "1"}
    )
    assert tuned.fetch.lookups == LookupLimits(threads=4, timeout=0.5, per_domain=1)


async def test_eight_hung_urls_leave_a_fetch_by_name_prompt(hung: HungDns, image_host: ImageHost) -> None:
    """The issue's case on the real fetcher: 8 URLs whose DNS never answers, then a real image."""
    jpeg = image_bytes()
    image_host.routes["/shirt.jpg"] = Reply(200, jpeg, {"Content-Type": "image/jpeg"})
    # Threads as few as asyncio's default pool had on two cores (6): the hung lookups could fill it.
    names = resolver(hung, threads=6, timeout=1.0, per_domain=2)
    fetcher = Fetcher(
        FetchPolicy(connect_timeout=2.0, allow_networks=(ipaddress.ip_network("127.0.0.1/32"),)), names
    )
    try:
        stuck = [
            asyncio.create_task(fetcher.fetch(f"http://img{i}.hung.test:{image_host.port}/x.jpg"))
            for i in range(8)
        ]
        await asyncio.sleep(0.05)
        for _ in range(3):
            started = time.monotonic()
            assert await fetcher.fetch(image_host.url("/shirt.jpg", "images.example.com")) == jpeg
            assert time.monotonic() - started < 0.5
        results = await asyncio.gather(*stuck, return_exceptions=True)
        assert all(isinstance(r, ImageHostTimeout) for r in results), results
        assert {describe(r).status for r in results if isinstance(r, ImageHostTimeout)} == {504}
    finally:
        await fetcher.aclose()
        names.close()
