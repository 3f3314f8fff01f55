"""A bounded asynchronous load generator with latency percentiles.

Two shapes of load, both bounded in time and in number of requests:

- closed loop (`closed_loop`): N workers, each sending its next request as soon as the previous one
  is answered — "concurrency N", what the benchmark table reports;
- open loop (`open_loop`): requests started at a fixed rate whether or not earlier ones have been
  answered — what a soak holds, and what exposes queueing (a slow server cannot slow the sender).

Every request runs under a hang limit: a request not answered by then is recorded as a hang, not
waited for, so a stuck server shows up as a counted failure instead of a stuck test.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx

# Sends request number `i` with the client and returns the answer.
Send = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]

HANG = "hang"


@dataclass(frozen=True)
class Outcome:
    """One request: when it started (s since the run began), how long it took, what came back."""

    index: int
    started: float
    latency: float
    status: int | None  # None: no HTTP answer (see `error`)
    error: str | None = None
    retry_after: str | None = None


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)
    elapsed: float = 0.0
    # Open loop only: requests due while `max_in_flight` were already outstanding, never sent.
    not_sent: int = 0
    # Closed loop only: the requests that start the run, one per worker, all in the same instant.
    first_round: int = 0

    @property
    def count(self) -> int:
        return len(self.outcomes)

    def statuses(self) -> Counter[str]:
        """How many of each answer: "200", "503", … or the error's name for no answer."""
        return Counter(str(o.status) if o.status is not None else (o.error or "error") for o in self.outcomes)

    def latencies(self, status: int | None = 200) -> list[float]:
        return [o.latency for o in self.outcomes if status is None or o.status == status]

    @property
    def ok(self) -> int:
        return sum(1 for o in self.outcomes if o.status == 200)

    @property
    def hangs(self) -> int:
        return sum(1 for o in self.outcomes if o.error == HANG)

    @property
    def throughput(self) -> float:
        """Successful answers per second over the whole run."""
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def p(self, q: float, status: int | None = 200) -> float:
        return percentile(self.latencies(status), q)

    def steady_state(self) -> LoadResult:
        """The same run without its first round: those requests all start in the same instant and
        queue behind each other, so in a short run they alone would set the tail percentiles."""
        return LoadResult(
            [o for o in self.outcomes if o.index >= self.first_round], self.elapsed, self.not_sent
        )

    def summary(self) -> str:
        return (
            f"{self.count} requests in {self.elapsed:.1f} s, {self.throughput:.1f} ok/s, "
            f"p50 {self.p(50) * 1000:.1f} ms, p95 {self.p(95) * 1000:.1f} ms, "
            f"p99 {self.p(99) * 1000:.1f} ms, "
            f"answers {dict(sorted(self.statuses().items()))}"
            + (f", not sent {self.not_sent}" if self.not_sent else "")
        )


async def _one(client: httpx.AsyncClient, send: Send, index: int, t0: float, hang_after: float) -> Outcome:
    start = time.perf_counter()
    status: int | None = None
    error: str | None = None
    retry_after: str | None = None
    try:
        async with asyncio.timeout(hang_after):
            response = await send(client, index)
        status = response.status_code
        retry_after = response.headers.get("retry-after")
    except TimeoutError:
        error = HANG
    except httpx.HTTPError as e:
        error = type(e).__name__
    return Outcome(index, start - t0, time.perf_counter() - start, status, error, retry_after)


async def closed_loop(
    client: httpx.AsyncClient,
    send: Send,
    *,
    concurrency: int,
    requests: int | None = None,
    duration: float | None = None,
    hang_after: float = 60.0,
) -> LoadResult:
    """`concurrency` workers sending back to back until `requests` are sent or `duration` is over."""
    if requests is None and duration is None:
        raise ValueError("a load must be bounded: give requests, duration or both")
    result = LoadResult(first_round=concurrency)
    t0 = time.perf_counter()
    stop_at = t0 + duration if duration is not None else math.inf
    counter = iter(range(requests if requests is not None else 2**62))

    async def worker() -> None:
        for index in counter:
            if time.perf_counter() >= stop_at:
                return
            result.outcomes.append(await _one(client, send, index, t0, hang_after))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - t0
    result.outcomes.sort(key=lambda o: o.index)
    return result


async def open_loop(
    client: httpx.AsyncClient,
    send: Send,
    *,
    rate: float,
    duration: float,
    max_in_flight: int = 256,
    hang_after: float = 60.0,
    on_tick: Callable[[float], None] | None = None,
    until: asyncio.Event | None = None,
) -> LoadResult:
    """Start `rate` requests per second for `duration` seconds, whatever the answers' pace.

    At most `max_in_flight` are outstanding: a request due beyond that is counted in `not_sent`
    (the server is not keeping up) instead of piling up in the generator. `on_tick(elapsed)` is
    called about once a second, e.g. to sample memory. Setting `until` ends the run early
    (`duration` is then the upper bound).
    """
    result = LoadResult()
    t0 = time.perf_counter()
    tasks: set[asyncio.Task[Outcome]] = set()
    total = int(rate * duration)
    next_tick = 1.0

    def done(task: asyncio.Task[Outcome]) -> None:
        tasks.discard(task)
        result.outcomes.append(task.result())

    for index in range(total):
        if until is not None and until.is_set():
            break
        due = t0 + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.perf_counter() - t0
        if on_tick is not None and now >= next_tick:
            on_tick(now)
            next_tick = math.floor(now) + 1.0
        if len(tasks) >= max_in_flight:
            result.not_sent += 1
            continue
        task = asyncio.create_task(_one(client, send, index, t0, hang_after))
        tasks.add(task)
        task.add_done_callback(done)
    if tasks:
        await asyncio.wait(set(tasks))
    result.elapsed = time.perf_counter() - t0
    result.outcomes.sort(key=lambda o: o.index)
    return result


def client_for(base_url: str, connections: int, timeout: float = 60.0) -> httpx.AsyncClient:
    """An HTTP/1.1 client with `connections` keep-alive connections to `base_url`."""
    return httpx.AsyncClient(
        base_url=base_url,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(timeout),
    )
