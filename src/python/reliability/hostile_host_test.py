from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator

import httpx
import pytest

from reliability.hostile_host import HostileImageHost
from reliability.images import sample_jpeg


@pytest.fixture()
def host() -> Iterator[HostileImageHost]:
    with HostileImageHost(drip=0.3) as h:
        yield h


def test_serves_registered_images_byte_for_byte(host: HostileImageHost) -> None:
    data = sample_jpeg(64, 48)
    r = httpx.get(host.put("shirt", data), timeout=5)
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["content-type"] == "image/jpeg"
    assert httpx.get(host.url("/image/unknown"), timeout=5).status_code == 404


def test_an_image_delay_stands_in_for_a_distant_host() -> None:
    data = sample_jpeg(64, 48)
    with HostileImageHost(image_delay=0.3) as far:
        url = far.put("shirt", data)
        t = time.monotonic()
        r = httpx.get(url, timeout=5)
        assert r.content == data
        assert time.monotonic() - t >= 0.3, "the answer came before the delay"
        assert httpx.get(far.url("/image/unknown"), timeout=5).status_code == 404


def test_by_default_each_connection_serves_one_request(host: HostileImageHost) -> None:
    url = host.put("shirt", sample_jpeg(32, 32))
    with httpx.Client(timeout=5) as client:
        for _ in range(3):
            assert client.get(url).headers["connection"] == "close"
    assert host.wait_all_closed("/image/", 5)
    assert [c.requests for c in host.connections("/image/")] == [1, 1, 1]


def test_a_kept_alive_host_serves_one_client_on_one_connection() -> None:
    data = sample_jpeg(32, 32)
    with HostileImageHost(keep_alive=True) as kept:
        url = kept.put("shirt", data)
        with httpx.Client(timeout=5) as client:
            for _ in range(3):
                assert client.get(url).content == data
            assert kept.open_connections("/image/") == 1, "the connection should stay open between requests"
        assert kept.wait_all_closed("/image/", 5)
        assert [c.requests for c in kept.connections("/image/")] == [3]
        assert kept.connections("/image/")[0].hung_up_by_peer


def test_a_kept_alive_host_still_closes_when_the_client_asks() -> None:
    # urllib, the course's fetcher, sends `Connection: close` with every request.
    with HostileImageHost(keep_alive=True) as kept:
        url = kept.put("shirt", sample_jpeg(32, 32))
        for _ in range(2):
            with urllib.request.urlopen(url, timeout=5) as r:
                assert r.headers["Connection"] == "close"
                r.read()
        assert kept.wait_all_closed("/image/", 5)
        assert [c.requests for c in kept.connections("/image/")] == [1, 1]


def test_slow_body_keeps_dripping_until_the_client_hangs_up(host: HostileImageHost) -> None:
    # Each byte arrives within the read timeout, so only a total deadline ends this download.
    received = 0
    started = time.monotonic()
    with httpx.stream("GET", host.url("/slow-body"), timeout=httpx.Timeout(2.0)) as r:
        assert r.headers["content-length"] == "1000000"
        for chunk in r.iter_raw():
            received += len(chunk)
            if time.monotonic() - started > 1.0:
                break
    assert received >= 3
    assert host.wait_all_closed("/slow-body", 5)
    assert host.connections("/slow-body")[0].hung_up_by_peer


@pytest.mark.parametrize("path", ["/slow-headers", "/stall"])
def test_answers_that_never_complete_trip_a_read_timeout_shorter_than_the_drip(
    host: HostileImageHost, path: str
) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(host.url(path), timeout=httpx.Timeout(5.0, read=0.1))
    assert host.wait_all_closed(path, 5)


@pytest.mark.parametrize("path", ["/endless", "/endless-chunked", "/huge-length"])
def test_endless_bodies_go_on_past_any_limit(host: HostileImageHost, path: str) -> None:
    received = 0
    with httpx.stream("GET", host.url(path), timeout=5) as r:
        if path == "/huge-length":
            assert r.headers["content-length"] == str(10**12)
        else:
            assert "content-length" not in r.headers
        for chunk in r.iter_raw():
            received += len(chunk)
            if received > 8 * 1024 * 1024:
                break
    assert received > 8 * 1024 * 1024
    assert host.wait_all_closed(path, 5)


def test_gzip_body_inflates_a_thousandfold(host: HostileImageHost) -> None:
    r = httpx.get(host.url("/gzip"), timeout=5)
    assert r.headers["content-encoding"] == "gzip"
    assert len(r.content) == 4 * 1024 * 1024
    assert int(r.headers["content-length"]) < len(r.content) // 1000


def test_redirect_loop_never_ends(host: HostileImageHost) -> None:
    with pytest.raises(httpx.TooManyRedirects):
        httpx.get(host.url("/redirect-loop"), follow_redirects=True, timeout=5)
