"""Resident memory of running processes, sampled in the background, and whether it grows.

Growth is judged the way an operator reads a memory graph: the median of the last stretch of
samples against the median of the first stretch after warm-up. Medians ignore the short spikes a
garbage collection or a burst of large images causes; a leak moves both ends apart steadily.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

MiB = 1024 * 1024

# name -> a function returning the current RSS in bytes (0 when the process is gone).
Probe = Callable[[], int]


@dataclass(frozen=True)
class MemoryTrend:
    name: str
    samples: tuple[int, ...]
    start: float  # MiB, median of the first stretch
    end: float  # MiB, median of the last stretch
    peak: float  # MiB

    @property
    def growth(self) -> float:
        """MiB gained from the first stretch to the last."""
        return self.end - self.start

    def __str__(self) -> str:
        return (
            f"{self.name}: {self.start:.0f} → {self.end:.0f} MiB (growth {self.growth:+.1f} MiB, "
            f"peak {self.peak:.0f} MiB, {len(self.samples)} samples)"
        )


def trend(name: str, samples: list[int], *, warmup: int = 0, stretch: float = 0.2) -> MemoryTrend:
    """Start/end/peak of `samples` (bytes), skipping the first `warmup` samples."""
    kept = [s for s in samples[warmup:] if s > 0] or [s for s in samples if s > 0] or [0]
    n = max(1, int(len(kept) * stretch))
    return MemoryTrend(
        name=name,
        samples=tuple(kept),
        start=statistics.median(kept[:n]) / MiB,
        end=statistics.median(kept[-n:]) / MiB,
        peak=max(kept) / MiB,
    )


@dataclass
class MemorySampler:
    """Samples every probe every `interval` seconds on a daemon thread, between start() and stop()."""

    probes: Mapping[str, Probe]
    interval: float = 1.0
    samples: dict[str, list[int]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.samples = {name: [] for name in self.probes}

    def sample(self) -> None:
        for name, probe in self.probes.items():
            self.samples[name].append(probe())

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.sample()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def start(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def __enter__(self) -> MemorySampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def trends(self, warmup: int = 0) -> dict[str, MemoryTrend]:
        return {name: trend(name, s, warmup=warmup) for name, s in self.samples.items()}
