from __future__ import annotations

import asyncio

import httpx

from reliability.load import HANG, LoadResult, client_for, closed_loop, open_loop, percentile
from testing_support.counting_server import CountingServer


def _get(path: str):  # type: ignore[no-untyped-def]
    async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.get(path)

    return send


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([3.0], 99) == 3.0


def test_closed_loop_sends_exactly_the_count_with_at_most_the_concurrency(
    counting_server: CountingServer,
) -> None:
    async def run() -> LoadResult:
        async with client_for(counting_server.url, 4) as client:
            return await closed_loop(client, _get("/?sleep=0.02"), concurrency=4, requests=40)

    result = asyncio.run(run())
    assert result.count == result.ok == 40
    assert counting_server.served == 40
    # Four workers really overlap, and never more than four.
    assert 2 <= counting_server.max_in_flight <= 4
    assert 0.02 <= result.p(50) <= result.p(95) <= result.p(99)
    assert result.throughput > 0


def test_the_steady_state_leaves_out_each_workers_first_request(counting_server: CountingServer) -> None:
    # A slow first round (a cold server, or the first requests queued behind each other).
    async def send(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.get("/?sleep=0.3" if i < 4 else "/?sleep=0.01")

    async def run() -> LoadResult:
        async with client_for(counting_server.url, 4) as client:
            return await closed_loop(client, send, concurrency=4, requests=40)

    result = asyncio.run(run())
    steady = result.steady_state()
    assert result.p(99) >= 0.3, "the whole run's tail is the first round"
    assert steady.count == 36
    assert steady.p(99) < 0.3
    assert steady.elapsed == result.elapsed


def test_closed_loop_stops_at_its_duration(counting_server: CountingServer) -> None:
    async def run() -> LoadResult:
        async with client_for(counting_server.url, 2) as client:
            return await closed_loop(client, _get("/?sleep=0.05"), concurrency=2, duration=0.5)

    result = asyncio.run(run())
    # Requests already sent finish; none starts after the duration.
    assert 0 < result.count <= 2 * (0.5 / 0.05 + 1)
    assert all(o.started < 0.5 for o in result.outcomes)


def test_open_loop_keeps_its_rate_while_answers_are_slow(counting_server: CountingServer) -> None:
    async def run() -> LoadResult:
        async with client_for(counting_server.url, 64) as client:
            return await open_loop(client, _get("/?sleep=0.3"), rate=40, duration=1.0)

    result = asyncio.run(run())
    assert result.count == result.ok == 40
    assert result.not_sent == 0
    # A closed loop would have waited for each answer; the open loop had many outstanding at once.
    assert counting_server.max_in_flight >= 8


def test_open_loop_bounds_what_is_outstanding(counting_server: CountingServer) -> None:
    async def run() -> LoadResult:
        async with client_for(counting_server.url, 64) as client:
            return await open_loop(client, _get("/?sleep=0.5"), rate=40, duration=0.5, max_in_flight=3)

    result = asyncio.run(run())
    assert counting_server.max_in_flight <= 3
    assert result.count == 3
    assert result.not_sent == 17


def test_a_request_that_never_ends_is_counted_as_a_hang_not_waited_for(
    counting_server: CountingServer,
) -> None:
    async def run() -> LoadResult:
        async with client_for(counting_server.url, 2) as client:
            return await closed_loop(client, _get("/?sleep=30"), concurrency=2, requests=2, hang_after=0.3)

    result = asyncio.run(run())
    assert result.hangs == 2
    assert result.statuses() == {HANG: 2}
    assert result.elapsed < 10


def test_connection_failures_are_counted_by_kind() -> None:
    async def run() -> LoadResult:
        # Port 9 (discard) on loopback: nothing listens, the connection is refused.
        async with client_for("http://127.0.0.1:9", 1, timeout=2) as client:
            return await closed_loop(client, _get("/"), concurrency=1, requests=3)

    result = asyncio.run(run())
    assert result.statuses() == {"ConnectError": 3}
    assert result.ok == 0
