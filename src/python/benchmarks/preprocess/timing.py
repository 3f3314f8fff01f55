"""Interleaved timing: every contender runs once per round, so drift on a shared machine hits all.

Each call is timed twice: wall-clock, and the calling thread's CPU time. Every contender here is
single-threaded work on bytes already in memory, so its CPU time is the cost of the work itself.
On a loaded machine the best wall round is not: a 45 ms call is preempted in more of its rounds
than a 15 ms one, which inflates the slower contender's best and so the speed-up between them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    name: str
    seconds: tuple[float, ...]
    # The thread's CPU time for the same calls (user + system, page faults included).
    cpu_seconds: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def min_ms(self) -> float:
        return min(self.seconds) * 1000

    @property
    def cpu_min_ms(self) -> float:
        return min(self.cpu_seconds) * 1000


def interleaved(
    contenders: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 2
) -> dict[str, Timing]:
    """Run each contender `warmup` times, then `rounds` rounds of one call each, in turn."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            cpu_start = time.thread_time()
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
            cpu[name].append(time.thread_time() - cpu_start)
    return {name: Timing(name, tuple(samples[name]), tuple(cpu[name])) for name in contenders}
