"""A bounded soak: a fixed request rate on loopback for a fixed time, with memory sampled.

CI holds 10 requests/s for 40 s; `RELIABILITY_SCALE=full` holds 20/s for 5 minutes. Half the
requests are the course's `/predict` with an image URL, half are uploads to `/v1/classify`, over
images of several sizes. Passing means: every request answered 200, none dropped by the generator,
and the resident memory of the gateway and the model server flat (growth reported).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from reliability.backend import Backend
from reliability.hostile_host import HostileImageHost
from reliability.images import sample_jpeg, sample_png
from reliability.load import LoadResult, client_for, open_loop
from reliability.memory import MemorySampler
from reliability.report import record
from reliability.scale import current
from reliability.traffic import alternate, classify_upload, predict_url
from testing_support.stack import GatewayFactory

SCALE = current()
WARMUP_SECONDS = 5.0
# Flat memory, as a bound: allocator noise and caches settle within a few MiB; a leak of even
# 1 KiB per request would show 10+ MiB at the CI size and 6 MiB per minute at full size.
MAX_GROWTH_MIB = {"gateway": 12.0, "model server": 24.0}


def test_soak_at_a_fixed_rate_answers_everything_with_flat_memory(
    healthy_backend: Backend, image_host: HostileImageHost, start_gateway_for: GatewayFactory, tmp_path: Path
) -> None:
    gateway = start_gateway_for(healthy_backend.address)
    server = healthy_backend.server
    assert server is not None
    uploads = [sample_jpeg(800, 600, seed=11), sample_jpeg(299, 299, seed=12), sample_png(400, 300, seed=13)]
    send = alternate(predict_url(image_host.url("/image/photo.jpg")), classify_upload(uploads))
    sampler = MemorySampler(
        {"gateway": gateway.process.rss, "model server": server.process.rss}, interval=1.0
    )

    async def soak() -> tuple[LoadResult, LoadResult]:
        async with client_for(gateway.url, 64, timeout=30) as client:
            # Warm-up first (first-call costs, pools, caches), not counted in the memory trend.
            warm = await open_loop(client, send, rate=SCALE.soak_rate, duration=WARMUP_SECONDS, hang_after=30)
            sampler.start()
            try:
                held = await open_loop(
                    client, send, rate=SCALE.soak_rate, duration=SCALE.soak_seconds, hang_after=30
                )
            finally:
                sampler.stop()
            return warm, held

    warm, held = asyncio.run(soak())
    trends = sampler.trends()
    record(
        "soak",
        {
            "rate_per_s": SCALE.soak_rate,
            "seconds": SCALE.soak_seconds,
            "requests": held.count,
            "answers": dict(held.statuses()),
            "not_sent": held.not_sent,
            "p50_ms": round(held.p(50) * 1000, 1),
            "p95_ms": round(held.p(95) * 1000, 1),
            "p99_ms": round(held.p(99) * 1000, 1),
            "memory": {name: str(t) for name, t in trends.items()},
        },
    )
    assert warm.statuses() == {"200": warm.count}
    assert held.count == int(SCALE.soak_rate * SCALE.soak_seconds)
    assert held.statuses() == {"200": held.count}, held.statuses()
    assert held.not_sent == 0
    assert held.hangs == 0
    for name, t in trends.items():
        assert t.growth < MAX_GROWTH_MIB[name], t
