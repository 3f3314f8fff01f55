"""The prediction log: one JSON line per classified image, sampled per request, opt-in.

`GATEWAY_PREDICTION_LOG` turns it on (`-`: standard output; else a file, opened for appending at
start). Each line says when, which request (its id, route, API key id), which model answered
(name, version, signature), the top `TOP_K` classes with their probabilities, the request's stage
timings and what the image was (sha256, bytes, stored width and height, where it came from: the
URL's host, or `upload`, `raw`, `base64`), never the image itself. docs/prediction-log.md is the
schema; `prediction_report` reads it.

Writing never holds up a request. The event loop only builds each line's fields and puts them on a
bounded queue (`GATEWAY_PREDICTION_LOG_BUFFER` lines); one writer thread turns them into JSON and
writes them, as many as are waiting in one write, so lines are whole and in order whatever the
concurrency. A line that finds the queue full is dropped, as are lines the file will not take (disk
full, I/O error; a partly written batch is cut back to its last whole line): both are counted in
`gateway_prediction_log_dropped_total{reason}` and logged at most once a minute, and the request is
answered as if nothing happened.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import queue
import random
import stat
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from PIL import Image

from clothing_settings import SettingError
from gateway.api_keys import current_key_id
from gateway.metrics import Metrics
from gateway.request_ids import current_request_id

if TYPE_CHECKING:
    from gateway.classify import Classification, ImageSource
    from gateway.settings import PredictionLog

SCHEMA_VERSION = 1
# Classes per line, best first: enough to see a close second and third without the whole vector.
TOP_K = 3
# Lines joined into one write at most (each a few hundred bytes).
_MAX_BATCH = 512
# Seconds between two warnings about dropped lines.
_WARN_INTERVAL = 60.0

log = logging.getLogger("gateway")

# The route of the request being handled, as gateway_requests_total labels it (set by the app's
# counting middleware; a request is one task from there to the classification).
_route: ContextVar[str] = ContextVar("gateway_prediction_log_route", default="")


def note_route(route: str) -> None:
    _route.set(route)


@dataclass(frozen=True)
class ImageFacts:
    """What the log says about one image's bytes (computed on the decode threads)."""

    sha256: str
    size: int
    width: int | None  # as stored in the file, before EXIF rotation or resizing
    height: int | None


def image_facts(data: bytes) -> ImageFacts:
    """The image's digest, byte count and stored dimensions: Pillow reads only the header here
    (tens of microseconds); the pixels were decoded once, for the model."""
    size: tuple[int, int] | tuple[None, None] = (None, None)
    # A header Pillow cannot read leaves the dimensions unknown (the image was decoded already).
    with contextlib.suppress(Exception), Image.open(io.BytesIO(data)) as img:
        size = img.size
    return ImageFacts(hashlib.sha256(data).hexdigest(), len(data), *size)


def _json(line: object) -> str:
    """One line's JSON: compact, UTF-8 text as it is."""
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def _utc_now() -> str:
    """UTC, ISO-8601 with milliseconds and a Z: `2026-01-31T12:34:56.789Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Sink(Protocol):
    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class _FileSink:
    """A file opened once for appending; a failed write leaves only whole lines behind."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)

    def write(self, data: bytes) -> None:
        start = os.fstat(self._fd).st_size if self._regular else 0
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, view[written:])
        except OSError:
            if written and self._regular:
                self._cut_back(start, written)
            raise

    def _cut_back(self, start: int, written: int) -> None:
        """Remove a batch's partial write, unless someone else appended meanwhile."""
        with contextlib.suppress(OSError):
            if os.fstat(self._fd).st_size == start + written:
                os.ftruncate(self._fd, start)

    def close(self) -> None:
        os.close(self._fd)


class _StdoutSink:
    """Standard output, shared with uvicorn's access log: written through the process's buffered
    stream, whose lock keeps each batch whole between other writers' lines."""

    def write(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    def close(self) -> None:
        pass


_STOP = object()


class PredictionLogger:
    """Samples requests, builds their lines on the event loop and writes them on its own thread."""

    def __init__(self, settings: PredictionLog, sink: _Sink, metrics: Metrics) -> None:
        self.settings = settings
        self._sink = sink
        self._metrics = metrics
        self._queue: queue.Queue[object] = queue.Queue(maxsize=settings.buffer)
        self._thread: threading.Thread | None = None
        self._warning_lock = threading.Lock()
        self._dropped_since_warning = 0
        self._last_warning = -_WARN_INTERVAL

    @classmethod
    def open(cls, settings: PredictionLog, metrics: Metrics) -> PredictionLogger | None:
        """The logger `settings` ask for (None: off); `SettingError` when its file cannot be opened."""
        if not settings.destination:
            return None
        if settings.destination == "-":
            return cls(settings, _StdoutSink(), metrics)
        try:
            sink = _FileSink(settings.destination)
        except OSError as e:
            raise SettingError(
                "GATEWAY_PREDICTION_LOG",
                f"GATEWAY_PREDICTION_LOG={settings.destination}: cannot open it for appending: "
                f"{e.strerror or e}",
            ) from None
        return cls(settings, sink, metrics)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop; a writer stuck on a hung disk is left after `timeout`."""
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(_STOP, timeout=timeout)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("prediction log: the writer did not finish within %g s; %d lines not written",
                            timeout, self._queue.qsize())  # fmt: skip
                return
            self._thread = None
        self._sink.close()

    def sampled(self) -> bool:
        """Whether this request's images go into the log (GATEWAY_PREDICTION_LOG_SAMPLE)."""
        rate = self.settings.sample
        return rate >= 1.0 or random.random() < rate  # noqa: S311 - sampling, not security

    def record(
        self,
        classification: Classification,
        sources: Sequence[ImageSource],
        fetched: Sequence[object],
        facts: Sequence[ImageFacts],
        decode: Mapping[str, object] | None = None,
    ) -> None:
        """Queue one line per classified image of a sampled request. `fetched` is each source's
        bytes or error, in order; `facts` those of the bytes, in order; `decode` the options that
        shaped the decode, as the answers report them."""
        common = {
            "schema_version": SCHEMA_VERSION,
            "time": _utc_now(),
            "request_id": current_request_id(),
            "route": _route.get(),
            "api_key_id": current_key_id(),
            "model": {
                "name": classification.model_name,
                "version": classification.model_version,
                "signature": classification.signature_name,
            },
            "timings_ms": classification.timings.as_ms(),
            "decode": None if decode is None else dict(decode),
        }
        facts_of = iter(facts)
        count = len(sources)
        outcomes = zip(sources, fetched, classification.results, strict=True)
        for index, (source, item, result) in enumerate(outcomes):
            image_facts = next(facts_of) if isinstance(item, bytes) else None
            if isinstance(result, BaseException) or image_facts is None:  # no prediction
                continue
            line = {
                **common,
                "image": {
                    "index": index,
                    "count": count,
                    **self._origin(source),
                    "sha256": image_facts.sha256,
                    "bytes": image_facts.size,
                    "width": image_facts.width,
                    "height": image_facts.height,
                },
                "top": [{"label": label, "probability": p} for label, p in result.top(TOP_K)],
            }
            self._put(line)

    def _origin(self, source: ImageSource) -> dict[str, object]:
        if source.url is not None:
            origin: dict[str, object] = {"source": "url", "host": urlsplit(source.url).hostname}
            if self.settings.full_url:
                origin["url"] = source.url
            return origin
        form = "base64" if source.b64 is not None else source.form
        return {"source": form, "host": None}

    def _put(self, line: dict[str, object]) -> None:
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self._dropped("buffer_full", 1, "the writer is behind by GATEWAY_PREDICTION_LOG_BUFFER lines")

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in batch
            lines = [item for item in batch if item is not _STOP]
            if lines:
                self._write(lines)
            if stop:
                return

    def _write(self, lines: list[object]) -> None:
        try:
            text = "".join(_json(line) + "\n" for line in lines)
            self._sink.write(text.encode("utf-8"))
        except OSError as e:
            self._dropped("write_error", len(lines), e.strerror or str(e))
            return
        except (TypeError, ValueError) as e:  # a value JSON cannot hold: the writer must go on
            self._dropped("write_error", len(lines), f"not serialisable: {e}")
            return
        self._metrics.prediction_log_lines.inc(len(lines))

    def _dropped(self, reason: str, count: int, why: str) -> None:
        """Count lines lost (on the event loop or the writer thread) and say so, once a minute."""
        self._metrics.prediction_log_dropped.labels(reason).inc(count)
        with self._warning_lock:
            self._dropped_since_warning += count
            now = time.monotonic()
            if now - self._last_warning < _WARN_INTERVAL:
                return
            dropped, self._dropped_since_warning, self._last_warning = self._dropped_since_warning, 0, now
        log.warning("prediction log: %d lines dropped (%s)", dropped, why)
