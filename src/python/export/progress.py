"""Progress lines for the slow steps of an export, and the timings printed at the end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class Progress:
    """Announces each step on `stream` (None: silent) and records how long it took."""

    stream: TextIO | None = None
    prefix: str = "[export]"
    timings: list[tuple[str, float]] = field(default_factory=list)

    def note(self, message: str) -> None:
        if self.stream is not None:
            print(f"{self.prefix} {message}", file=self.stream, flush=True)

    @contextmanager
    def step(self, name: str, message: str) -> Iterator[None]:
        """Time one step: prints `message…` before and `name: N.N s` once it succeeded."""
        self.note(f"{message}…")
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        self.timings.append((name, elapsed))
        self.note(f"{name}: {elapsed:.1f} s")

    def summary(self) -> str:
        """`load 2.1 s, trace 0.8 s, …, total 5.0 s`."""
        parts = [f"{name} {seconds:.1f} s" for name, seconds in self.timings]
        total = sum(seconds for _, seconds in self.timings)
        return ", ".join([*parts, f"total {total:.1f} s"])
