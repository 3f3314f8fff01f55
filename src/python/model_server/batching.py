"""Server-side batching: concurrent Predict calls merged into one model run and split back.

A `Batcher` serves one signature of one loaded version. Callers block in `submit`; batch threads
take queued tasks that can share a run (same inputs' dtypes and non-batch shapes, same outputs),
up to `max_batch_size` rows, waiting at most `batch_timeout_micros` after the oldest task for more,
concatenate along axis 0, pad up to the next `allowed_batch_sizes` entry by repeating the first
row (as TF Serving does), run once, and hand each caller its rows. The queue is bounded by
`max_enqueued_batches × max_batch_size` rows; a full queue refuses at once with TF Serving's
UNAVAILABLE message instead of growing.

`stats` counts batches, rows and padding rows; `close` logs them, which is how an operator (and
the benchmark) sees whether batches actually formed and what padding cost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from model_server.config_files import BatchingParameters
from model_server.errors import Internal, InvalidArgument, ServingError, Unavailable

log = logging.getLogger(__name__)

Arrays = dict[str, npt.NDArray[Any]]
RunFn = Callable[[Mapping[str, npt.NDArray[Any]], Sequence[str]], Arrays]


@dataclass
class _Task:
    inputs: Mapping[str, npt.NDArray[Any]]
    fetch: tuple[str, ...]
    rows: int
    key: tuple[Any, ...]
    enqueued: float
    done: threading.Event = field(default_factory=threading.Event)
    result: Arrays | None = None
    error: ServingError | None = None


@dataclass(frozen=True)
class BatchStats:
    batches: int = 0
    rows: int = 0  # callers' rows run
    padding_rows: int = 0  # rows added to reach an allowed batch size

    @property
    def mean_batch_size(self) -> float:
        """Callers' rows per model run (padding not counted)."""
        return self.rows / self.batches if self.batches else 0.0

    def describe(self) -> str:
        return (
            f"{self.batches} batches, {self.rows} rows (mean {self.mean_batch_size:.1f} per batch), "
            f"{self.padding_rows} padding rows"
        )


def batch_rows(inputs: Mapping[str, npt.NDArray[Any]]) -> int:
    """The shared 0th dimension of the inputs, or TF Serving's batching error."""
    sizes = set()
    for array in inputs.values():
        if array.ndim == 0:
            raise InvalidArgument("Batching Run() input tensors must have at least one dimension")
        sizes.add(array.shape[0])
    if len(sizes) > 1:
        raise InvalidArgument("Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop() if sizes else 0


class Batcher:
    def __init__(self, run: RunFn, params: BatchingParameters, name: str) -> None:
        self._run = run
        self._params = params
        self._timeout = params.batch_timeout_micros / 1e6
        self._capacity = params.max_enqueued_batches * params.max_batch_size
        self._queue: deque[_Task] = deque()
        self._queued_rows = 0
        self._closed = False
        self._flushing = False
        self._cv = threading.Condition()
        self._name = name
        self._stats = BatchStats()
        self._threads = [
            threading.Thread(target=self._loop, name=f"batch-{name}-{i}", daemon=True)
            for i in range(params.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, inputs: Mapping[str, npt.NDArray[Any]], fetch: Sequence[str]) -> Arrays:
        """Run `inputs` as part of a batch; blocks until this task's outputs are ready."""
        rows = batch_rows(inputs)
        if rows > self._params.max_batch_size:
            raise InvalidArgument(
                f"Task size {rows} is larger than maximum input batch size {self._params.max_batch_size}"
            )
        key = (tuple(fetch), *((a, v.dtype.str, v.shape[1:]) for a, v in sorted(inputs.items())))
        task = _Task(inputs=inputs, fetch=tuple(fetch), rows=rows, key=key, enqueued=time.monotonic())
        with self._cv:
            if self._closed:
                raise Unavailable("The batch scheduler is shutting down")
            if self._queued_rows + rows > self._capacity:
                raise Unavailable("The batch scheduling queue to which this task was submitted is full")
            self._queue.append(task)
            self._queued_rows += rows
            self._cv.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        assert task.result is not None
        return task.result

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a batch thread."""
        with self._cv:
            return self._queued_rows

    @property
    def stats(self) -> BatchStats:
        """Batches run so far, their rows and their padding."""
        with self._cv:
            return self._stats

    def flush(self) -> None:
        """From now on run queued tasks at once instead of waiting for fuller batches (draining)."""
        with self._cv:
            self._flushing = True
            self._cv.notify_all()

    def close(self) -> None:
        """Finish queued tasks, then stop the batch threads."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        for thread in self._threads:
            thread.join()
        log.info("batching %s: %s", self._name, self.stats.describe())

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._execute(batch)

    def _next_batch(self) -> list[_Task] | None:
        with self._cv:
            # Wait for a full batch, but no longer than the timeout after the oldest queued task
            # arrived. The oldest task is looked up again after every wake-up: another batch thread
            # may have taken the one this thread started waiting for, and a deadline kept from it
            # would send the next tasks off early, alone.
            while True:
                if not self._queue:
                    if self._closed:
                        return None
                    self._cv.wait()
                    continue
                if self._closed or self._flushing or self._queued_rows >= self._params.max_batch_size:
                    break
                remaining = self._queue[0].enqueued + self._timeout - time.monotonic()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            head = self._queue[0]
            batch: list[_Task] = []
            rows = 0
            kept: deque[_Task] = deque()
            for task in self._queue:
                if task.key == head.key and rows + task.rows <= self._params.max_batch_size:
                    batch.append(task)
                    rows += task.rows
                else:
                    kept.append(task)
            self._queue = kept
            self._queued_rows -= rows
            return batch

    def _execute(self, batch: list[_Task]) -> None:
        try:
            results = self._run_merged(batch)
        except ServingError as e:
            for task in batch:
                task.error = e
                task.done.set()
            return
        except Exception:  # never leave a caller waiting forever on a bug
            log.exception("batched run failed")
            for task in batch:
                task.error = Internal("Batched model run failed")
                task.done.set()
            return
        for task, result in zip(batch, results, strict=True):
            task.result = result
            task.done.set()

    def _run_merged(self, batch: list[_Task]) -> list[Arrays]:
        total = sum(t.rows for t in batch)
        padded = self._padded_size(total)
        merged: dict[str, npt.NDArray[Any]] = {}
        for alias in batch[0].inputs:
            parts = [t.inputs[alias] for t in batch]
            if padded > total:
                first = parts[0][:1]
                parts.append(np.repeat(first, padded - total, axis=0))
            merged[alias] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        with self._cv:
            self._stats = BatchStats(
                self._stats.batches + 1, self._stats.rows + total, self._stats.padding_rows + padded - total
            )
        outputs = self._run(merged, batch[0].fetch)
        for alias, value in outputs.items():
            if value.ndim == 0 or value.shape[0] != padded:
                raise Internal(
                    f"Batched output tensor {alias}'s 0th dimension does not equal the sum of the 0th "
                    "dimension sizes of the input tensors"
                )
        results: list[Arrays] = []
        start = 0
        for task in batch:
            stop = start + task.rows
            results.append({alias: value[start:stop] for alias, value in outputs.items()})
            start = stop
        return results

    def _padded_size(self, rows: int) -> int:
        for size in self._params.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows
