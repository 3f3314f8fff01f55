"""The gateway and the model server reuse the memory each request frees instead of faulting it in again.

Several requests in flight make glibc's moving thresholds hand freed memory back to the kernel and
take it again on the next image (docs/benchmarks.md, "Gateway": ~650 page faults per image in the
gateway, ~250 per request in the model server, a sixth of the gateway's CPU). Both processes fix
the thresholds at start (`memory_reuse`); `GATEWAY_KEEP_FREED_MB=0` turns it off in the gateway,
which shows the difference on the same traffic. The difference shows with float32 requests
(`GATEWAY_SIGNATURE=serving_default`, a model without the export's `pixels` signature): 1 MB
tensors and requests per image. Sending uint8 pixels, the default with the demo model, allocates a
quarter of that, and glibc's own thresholds then happen to cope too.
"""

from __future__ import annotations

import asyncio

from reliability.backend import Backend
from reliability.images import sample_jpeg
from reliability.load import client_for, closed_loop
from reliability.report import record
from reliability.traffic import classify_upload
from testing_support.processes import RunningProcess
from testing_support.stack import Gateway, GatewayFactory

REQUESTS = 100
WARM_UP = 40  # every thread's allocator arena grows to its working size first
CONCURRENCY = 4  # the gateway's default work slots on 2 cores: 4 requests decode at once
# A 1000×800 photo: 2.4 MB decoded, 1 MB as a float32 tensor, 1 MB serialised; ~840 pages if
# faulted anew (uint8 pixels: 268 kB each).
PHOTO = sample_jpeg(1000, 800, seed=21)


def _faults_per_request(gateway: Gateway, processes: dict[str, RunningProcess]) -> dict[str, float]:
    async def load() -> dict[str, float]:
        async with client_for(gateway.url, CONCURRENCY) as client:
            send = classify_upload([PHOTO])
            warm = await closed_loop(client, send, concurrency=CONCURRENCY, requests=WARM_UP)
            assert warm.statuses() == {"200": WARM_UP}, warm.summary()
            before = {name: p.minor_page_faults() for name, p in processes.items()}
            result = await closed_loop(client, send, concurrency=CONCURRENCY, requests=REQUESTS)
            assert result.statuses() == {"200": REQUESTS}, result.summary()
            return {name: (p.minor_page_faults() - before[name]) / REQUESTS for name, p in processes.items()}

    return asyncio.run(load())


def test_requests_reuse_freed_memory_in_the_gateway_and_the_model_server(
    healthy_backend: Backend, start_gateway_for: GatewayFactory
) -> None:
    server = healthy_backend.server
    assert server is not None
    kept = start_gateway_for(healthy_backend.address)
    faults = _faults_per_request(kept, {"gateway": kept.process, "model server": server.process})
    kept.process.stop()
    float32 = {"GATEWAY_SIGNATURE": "serving_default"}
    kept_float = start_gateway_for(healthy_backend.address, float32)
    with_float = _faults_per_request(kept_float, {"gateway": kept_float.process})["gateway"]
    kept_float.process.stop()
    default = start_gateway_for(healthy_backend.address, {**float32, "GATEWAY_KEEP_FREED_MB": "0"})
    without = _faults_per_request(default, {"gateway": default.process})["gateway"]
    record(
        "memory_reuse",
        {
            "page_faults_per_request": {k: round(v, 1) for k, v in faults.items()},
            "gateway_float32": round(with_float, 1),
            "gateway_float32_with_keep_freed_mb_0": round(without, 1),
        },
    )

    assert faults["gateway"] < 60, f"gateway: {faults['gateway']:.0f} page faults per request"
    assert faults["model server"] < 100, f"model server: {faults['model server']:.0f} page faults per request"
    assert with_float < 60, f"gateway sending float32: {with_float:.0f} page faults per request"
    # The same traffic with glibc's own thresholds: the memory goes back and is faulted in again.
    assert without > 4 * max(with_float, 25), (
        f"gateway sending float32 with GATEWAY_KEEP_FREED_MB=0: {without:.0f} page faults per request, "
        f"with it: {with_float:.0f}"
    )
