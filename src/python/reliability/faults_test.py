"""Faults of the model server and of the gateway itself, under load, on the real processes.

Each test states the behaviour an operator relies on and checks it on every answer the load
generator received: what status, with which headers, within which bound, and that none was lost.
"""

from __future__ import annotations

import asyncio
import signal
import time

import httpx

from reliability.backend import Backend
from reliability.hostile_host import HostileImageHost
from reliability.images import sample_jpeg
from reliability.load import LoadResult, client_for, closed_loop, open_loop
from reliability.report import record
from reliability.scale import current
from reliability.traffic import classify_upload, predict_url
from testing_support.stack import GatewayFactory

SCALE = current()


async def _until_status(client: httpx.AsyncClient, path: str, status: int, timeout: float) -> float:
    """Seconds until GET `path` answers `status`; fails the test after `timeout`."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            if (await client.get(path)).status_code == status:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"GET {path} did not answer {status} within {timeout:g} s")


def test_model_server_killed_mid_load_is_503_with_retry_after_then_recovers_without_a_gateway_restart(
    healthy_backend: Backend, image_host: HostileImageHost, start_gateway_for: GatewayFactory
) -> None:
    deadline = 5.0
    gateway = start_gateway_for(healthy_backend.address, {"GATEWAY_PREDICT_TIMEOUT": str(deadline)})
    photo = image_host.url("/image/photo.jpg")

    async def scenario() -> tuple[LoadResult, float, int, float, float]:
        stop = asyncio.Event()
        async with (
            client_for(gateway.url, 64, timeout=30) as load_client,
            httpx.AsyncClient(base_url=gateway.url, timeout=10) as probe,
        ):
            t0 = time.perf_counter()
            load = asyncio.create_task(
                open_loop(
                    load_client,
                    predict_url(photo),
                    rate=10,
                    duration=300,
                    hang_after=deadline + 10,
                    until=stop,
                )
            )
            await asyncio.sleep(SCALE.fault_load_seconds)
            killed_at = time.perf_counter() - t0
            healthy_backend.kill()
            await _until_status(probe, "/readyz", 503, deadline)
            ready_during_outage = (await probe.get("/readyz")).status_code
            await asyncio.sleep(1.0)
            await asyncio.to_thread(healthy_backend.restart)
            available_at = time.perf_counter() - t0
            recovery = await _until_status(probe, "/readyz", 200, 15)
            recovered_at = time.perf_counter() - t0
            await asyncio.sleep(SCALE.fault_load_seconds)
            stop.set()
            return await load, killed_at, ready_during_outage, available_at + recovery, recovered_at

    result, killed_at, ready_during_outage, ready_again_at, recovered_at = asyncio.run(scenario())
    statuses = result.statuses()
    unavailable = [o for o in result.outcomes if o.status == 503]
    record(
        "model_server_killed",
        {
            "requests": result.count,
            "answers": dict(statuses),
            "max_503_latency_s": round(max((o.latency for o in unavailable), default=0), 3),
            "recovery_after_model_available_s": round(recovered_at - ready_again_at, 3),
            "outage_s": round(recovered_at - killed_at, 2),
        },
    )
    # Nothing lost: every request got an answer, and only these two.
    assert set(statuses) <= {"200", "503"}, statuses
    assert result.hangs == 0
    assert result.not_sent == 0
    assert statuses["503"] > 0, "the outage was never seen"
    # During the outage: 503 with Retry-After, within the deadline (no waiting on a dead server).
    assert all(o.retry_after and o.latency < deadline for o in unavailable), unavailable[:3]
    assert ready_during_outage == 503
    # The same gateway process serves again once the model is back.
    assert gateway.process.alive()
    after = [o for o in result.outcomes if o.started > recovered_at + 0.5]
    assert after
    assert all(o.status == 200 for o in after), LoadResult(after).statuses()
    # Before the kill, everything succeeded.
    assert all(o.status == 200 for o in result.outcomes if o.started + o.latency < killed_at)


def test_slow_model_server_is_504_at_the_deadline_and_the_concurrency_limit_refuses_instead_of_queueing(
    healthy_backend: Backend, start_gateway_for: GatewayFactory
) -> None:
    deadline, limit = 1.5, 4
    gateway = start_gateway_for(
        healthy_backend.address,
        # Half the admitted requests wait in the work-slot queue: the deadline must bound them too.
        {
            "GATEWAY_PREDICT_TIMEOUT": str(deadline),
            "GATEWAY_MAX_CONCURRENCY": str(limit),
            "GATEWAY_MAX_ACTIVE": str(limit // 2),
        },
    )
    upload = classify_upload([sample_jpeg(320, 240, seed=3)])

    async def scenario() -> tuple[LoadResult, LoadResult, float]:
        async with client_for(gateway.url, 64, timeout=30) as client:
            healthy_backend.proxy.delay = 4 * deadline  # every byte to and from TF Serving held 6 s
            burst = await closed_loop(
                client, upload, concurrency=3 * limit, requests=3 * limit, hang_after=20
            )
            sustained = await open_loop(
                client, upload, rate=20, duration=SCALE.fault_load_seconds, hang_after=20
            )
            healthy_backend.proxy.delay = 0.0
            started = time.perf_counter()
            while (await upload(client, 0)).status_code != 200:
                assert time.perf_counter() - started < 15, "the gateway did not recover from the slow model"
                await asyncio.sleep(0.2)
            return burst, sustained, time.perf_counter() - started

    burst, sustained, healed_in = asyncio.run(scenario())
    record(
        "model_server_slow",
        {
            "burst": dict(burst.statuses()),
            "sustained": dict(sustained.statuses()),
            "p99_504_s": round(sustained.p(99, 504), 3),
            "p99_429_s": round(sustained.p(99, 429), 3),
            "recovered_in_s": round(healed_in, 2),
        },
    )
    # The burst: exactly `limit` requests are admitted (half reach TF Serving, half queue for a slot)
    # and all time out at the deadline; the rest are refused at once with 429 + Retry-After.
    assert burst.statuses() == {"504": limit, "429": 2 * limit}
    # Queued ones too: had their wait not counted against the deadline, they would answer after two.
    assert all(deadline <= x < deadline + 1.0 for x in burst.latencies(504)), burst.latencies(504)
    for result in (burst, sustained):
        assert result.hangs == 0
        assert result.not_sent == 0
        assert set(result.statuses()) <= {"429", "504"}, result.statuses()
        assert all(deadline <= x < deadline + 2.0 for x in result.latencies(504))
        assert all(x < deadline for x in result.latencies(429))
        assert all(o.retry_after for o in result.outcomes if o.status == 429)
    # Sustained overload: never more than `limit` in flight, so at most `limit` per deadline end.
    windows = SCALE.fault_load_seconds / deadline + 2
    assert sustained.statuses()["504"] <= limit * windows


def test_sigterm_under_load_finishes_in_flight_requests_and_refuses_new_connections(
    healthy_backend: Backend, start_gateway_for: GatewayFactory
) -> None:
    gateway = start_gateway_for(healthy_backend.address, {"GATEWAY_SHUTDOWN_GRACE": "15"})
    upload = classify_upload([sample_jpeg(320, 240, seed=4)])
    in_flight = 6

    async def in_flight_count(client: httpx.AsyncClient) -> float:
        text = (await client.get("/metrics")).text
        line = next(x for x in text.splitlines() if x.startswith("gateway_requests_in_flight "))
        return float(line.split()[1])

    async def scenario() -> tuple[list[int], str]:
        healthy_backend.proxy.delay = 1.5  # each request spends 3 s waiting on TF Serving
        async with client_for(gateway.url, in_flight, timeout=30) as client:
            tasks = [asyncio.ensure_future(upload(client, i)) for i in range(in_flight)]
            async with httpx.AsyncClient(base_url=gateway.url, timeout=5) as probe:
                started = time.perf_counter()
                while await in_flight_count(probe) < in_flight:
                    assert time.perf_counter() - started < 10, "the requests never got in flight"
                    await asyncio.sleep(0.05)
            gateway.process.signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            # A new client after SIGTERM: its connection is refused (nothing half-served).
            try:
                async with httpx.AsyncClient(base_url=gateway.url, timeout=5) as late:
                    late_answer = str((await upload(late, 0)).status_code)
            except httpx.ConnectError:
                late_answer = "refused"
            answers = await asyncio.gather(*tasks)
        return [r.status_code for r in answers], late_answer

    statuses, late_answer = asyncio.run(scenario())
    code = gateway.process.wait(20)
    record("gateway_sigterm", {"in_flight": statuses, "new_request": late_answer, "exit_status": code})
    assert statuses == [200] * in_flight
    assert late_answer in ("refused", "503")
    # uvicorn (≥ 0.29) re-raises the SIGTERM it caught once the drain is done, so a clean stop
    # exits "killed by SIGTERM" (143 in a shell), which is what Kubernetes expects too.
    assert code in (0, -signal.SIGTERM), code
    assert "Traceback" not in gateway.process.log_tail(200)


# --- a hostile image host ------------------------------------------------------------------------

FETCH = {
    "GATEWAY_FETCH_CONNECT_TIMEOUT": "1",
    "GATEWAY_FETCH_READ_TIMEOUT": "1",
    "GATEWAY_FETCH_TOTAL_TIMEOUT": "3",
    "GATEWAY_MAX_IMAGE_BYTES": str(2 * 1024 * 1024),
}
MAX_BYTES = 2 * 1024 * 1024
# Loopback socket buffers hold a few MiB that the host counts as sent but nobody read.
SOCKET_SLACK = 8 * 1024 * 1024

# path -> (status, error code, lower and upper bound on the answer's latency in seconds).
HOSTILE = {
    # Drips one byte every 0.3 s: under the read timeout, so only the 3 s total deadline ends it.
    "/slow-body": (504, "image_host_timeout", 3.0, 5.0),
    "/slow-headers": (504, "image_host_timeout", 3.0, 5.0),
    # Silent after the request: the 1 s read timeout ends it.
    "/stall": (504, "image_host_timeout", 1.0, 3.0),
    "/endless": (413, "too_large", 0.0, 3.0),
    "/endless-chunked": (413, "too_large", 0.0, 3.0),
    # Refused from the header alone.
    "/huge-length": (413, "too_large", 0.0, 1.0),
    "/gzip": (502, "image_host_failed", 0.0, 1.0),
    "/redirect-loop": (502, "image_host_failed", 0.0, 3.0),
}


def test_hostile_image_hosts_are_cut_off_by_the_timeouts_and_byte_limit_while_other_users_are_served(
    healthy_backend: Backend, image_host: HostileImageHost, start_gateway_for: GatewayFactory
) -> None:
    gateway = start_gateway_for(healthy_backend.address, FETCH)
    photo = image_host.url("/image/photo.jpg")
    per_path = 4

    async def hostile(client: httpx.AsyncClient, path: str) -> tuple[str, int, str, float]:
        start = time.perf_counter()
        r = await client.post("/predict", json={"url": image_host.url(path)})
        return path, r.status_code, r.json()["error"]["code"], time.perf_counter() - start

    async def scenario() -> tuple[list[tuple[str, int, str, float]], LoadResult]:
        async with client_for(gateway.url, 64, timeout=30) as client:
            attacks = asyncio.gather(*(hostile(client, p) for p in HOSTILE for _ in range(per_path)))
            # Other users, at the same time: the slow hosts must not hold them up.
            others = await open_loop(client, predict_url(photo), rate=10, duration=2.5, hang_after=10)
            return await attacks, others

    before = gateway.process.rss()
    answers, others = asyncio.run(scenario())
    after = gateway.process.rss()
    record(
        "image_host_hostile",
        {
            "hostile_requests": len(answers),
            "answers": sorted({(p, s, c) for p, s, c, _ in answers}),
            "slowest_s": {p: round(max(t for q, _, _, t in answers if q == p), 2) for p in HOSTILE},
            "concurrent_normal_requests": dict(others.statuses()),
            "gateway_rss_growth_mib": round((after - before) / 2**20, 1),
        },
    )
    for path, status, code, took in answers:
        want_status, want_code, low, high = HOSTILE[path]
        assert (status, code) == (want_status, want_code), path
        assert low <= took < high, f"{path} answered after {took:.2f} s"
    assert others.statuses() == {"200": others.count}
    # The gateway let go of every hostile connection, and read no more than the limit allows.
    for path in HOSTILE:
        assert image_host.wait_all_closed(path, 5), f"{path}: the gateway kept the connection open"
    for path in ("/endless", "/endless-chunked", "/huge-length"):
        assert all(c.bytes_sent <= MAX_BYTES + SOCKET_SLACK for c in image_host.connections(path)), path
    assert (after - before) < 200 * 2**20
