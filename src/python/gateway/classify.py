"""The one classification path: images (URLs or bytes) -> one Predict call -> scores per image.

Every input form the HTTP routes accept (the course's `{"url": …}`, base64 JSON, uploads, raw
bodies, batches)
ends up here as a list of `ImageSource`. Fetching runs concurrently on the event loop; decoding,
normalising and serialising the Predict request run in a bounded thread pool, so the loop keeps
serving other requests while images decode (Pillow and numpy release the GIL for the heavy parts).

Two limits shape the load: `ConcurrencyLimit` admits at most `max_concurrency` requests and answers
429 beyond it; `WorkSlots` lets at most `max_active` of the admitted ones decode and wait on TF
Serving at once, the rest waiting their turn in arrival order once their image is fetched.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clothing_preproc import (
    PreprocessConfig,
    PreprocessingError,
    decode_image,
    normalize_into,
    scores_by_label,
    softmax,
    top_k,
)
from gateway import tracing
from gateway.base64_images import decode_image_b64
from gateway.decode_options import Decoding
from gateway.errors import BadRequest, GatewayError, ModelDeadlineExceeded, Overloaded
from gateway.fetch import Fetcher, check_url
from gateway.metrics import STAGES, Metrics
from gateway.prediction_log import ImageFacts, PredictionLogger, image_facts
from gateway.serving import ModelInfo, PredictCall, ServingClient
from gateway.settings import Admission
from gateway.versions import LATEST, ModelChoice


@dataclass(frozen=True)
class ImageSource:
    """One image to classify: a URL to fetch, bytes already received, or base64 text of them
    (decoded here, within the image byte limit, so every route bounds it the same way)."""

    url: str | None = None
    data: bytes | None = None
    b64: str | None = None
    # How bytes came (the prediction log says it): "upload" (a multipart file), "raw" (the body,
    # or a KServe v2 binary element).
    form: str = "raw"

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.url, self.data, self.b64)) != 1:
            raise ValueError("an ImageSource is one of a URL, bytes or base64 text")


@dataclass(frozen=True)
class ImageResult:
    logits: tuple[float, ...]
    labels: tuple[str, ...]

    def scores(self) -> dict[str, float]:
        """The course gateway's answer: `{class: logit}`."""
        return scores_by_label(self.logits, self.labels)

    def probabilities(self) -> dict[str, float]:
        return {label: float(p) for label, p in zip(self.labels, softmax(self.logits), strict=True)}

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k most probable classes, best first (ties keep the model's order)."""
        return top_k(self.logits, self.labels, min(k, len(self.labels)))


@dataclass
class Timings:
    """Seconds per stage for one request (decode and preprocess summed over its images)."""

    fetch: float = 0.0
    queue: float = 0.0
    decode: float = 0.0
    preprocess: float = 0.0
    predict: float = 0.0
    total: float = 0.0

    def as_ms(self) -> dict[str, float]:
        return {k: round(v * 1000, 3) for k, v in vars(self).items()}


# Why one image of a batch has no result; the rest of the batch is answered all the same.
ImageError = GatewayError | PreprocessingError


@dataclass(frozen=True)
class Classification:
    # One per image, in order; an ImageError only for a batch classified with `each=True`.
    results: tuple[ImageResult | ImageError, ...]
    model_name: str
    model_version: int | None
    signature_name: str | None  # None: no image reached the model
    timings: Timings = field(default_factory=Timings)
    # What shaped the decode: the request's options applied to the model's preprocessing.
    decoding: Decoding = field(default_factory=Decoding)
    preprocessing: PreprocessConfig = field(default_factory=PreprocessConfig)


# Base64 texts shorter than this are decoded on the event loop (tens of microseconds); longer
# ones in the thread pool.
_B64_ON_LOOP = 64 * 1024

# A Predict call that starts late still gets this long (a call with a zero deadline fails at once).
_MIN_PREDICT_TIMEOUT = 0.5


class ConcurrencyLimit:
    """At most `limit` requests in flight; one more is refused at once (429), never queued.

    Queueing would only hide overload: TF Serving keeps working on abandoned requests, so waiting
    clients pile up behind it. A quick 429 lets the client (or the load balancer) go elsewhere.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.admitted = 0  # ever, to tell a quiet period from a busy one

    def __enter__(self) -> ConcurrencyLimit:
        if self.in_flight >= self.limit:
            raise Overloaded(f"the gateway is handling {self.limit} requests already; retry shortly")
        self.in_flight += 1
        self.admitted += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.in_flight -= 1


class WorkSlots:
    """At most `size` requests decoding or waiting on TF Serving; the others queue, first come first served.

    Without it every admitted request works at once: the decode threads and TF Serving share the CPU
    between all of them, so each finishes late (at 32 in flight, p99 was 3-5× p50) and every one holds
    its decoded image meanwhile. Served in arrival order, latency stays even and memory stays flat,
    like the course's single sync worker, while fetches still overlap freely before the queue.
    asyncio's Semaphore is that queue: it wakes waiters in order and hands a released slot to the
    oldest one, so a newcomer cannot overtake it (`work_slots_test.py` holds it to that).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._semaphore = asyncio.Semaphore(size)

    async def acquire(self) -> None:
        await self._semaphore.acquire()

    def release(self) -> None:
        self._semaphore.release()

    async def __aenter__(self) -> WorkSlots:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class Classifier:
    def __init__(
        self,
        serving: ServingClient,
        fetcher: Fetcher,
        pool: ThreadPoolExecutor,
        metrics: Metrics,
        admission: Admission,
        prediction_log: PredictionLogger | None = None,
    ) -> None:
        """Admission bounds the requests; the batch size, image size, model name and deadline are
        those of the serving client's target."""
        self._serving = serving
        self._fetcher = fetcher
        self._pool = pool
        self._metrics = metrics
        target = serving.target
        self._max_batch = target.max_batch
        self._max_image_bytes = target.limits.max_bytes
        self._model_name = target.model_name
        self.limit = ConcurrencyLimit(admission.max_concurrency)
        self.slots = WorkSlots(admission.work_slots)
        self._deadline = target.timeout
        self._prediction_log = prediction_log

    async def classify(
        self,
        sources: Sequence[ImageSource],
        *,
        each: bool = False,
        decoding: Decoding | None = None,
        choice: ModelChoice | None = None,
    ) -> Classification:
        """Scores for every image, or the error that stopped the request.

        With `each`, an image that cannot be fetched or decoded gets its error in its slot of the
        results and the others are classified all the same; errors of the request as a whole
        (admission, TF Serving) are still raised. `decoding`: the request's decode options (the
        routes resolve them from the operator's defaults and the request); None: Keras-exact.
        `choice`: the model version or label to ask TF Serving for; None: its latest version.
        """
        if not sources:
            raise BadRequest("no image given")
        if len(sources) > self._max_batch:
            raise BadRequest(f"{len(sources)} images in one request; the limit is {self._max_batch}")
        with self.limit:
            self._metrics.in_flight.inc()
            try:
                return await self._classify(sources, each, decoding or Decoding(), choice or LATEST)
            finally:
                self._metrics.in_flight.dec()

    async def _classify(
        self, sources: Sequence[ImageSource], each: bool, decoding: Decoding, choice: ModelChoice
    ) -> Classification:
        timings = Timings()
        start = time.perf_counter()
        # A sampled request's image facts are gathered on the decode threads, for the log.
        log = self._prediction_log
        facts: list[ImageFacts] | None = [] if log is not None and log.sampled() else None
        urls = sum(s.url is not None for s in sources)
        with tracing.span("fetch", {"gateway.images": urls}, when=urls > 0) as fetch_span:
            fetched = await self._all_bytes(sources, each)
            if fetch_span.is_recording():
                got = [len(b) for b in fetched if isinstance(b, bytes)]
                failed = len(fetched) - len(got)
                fetch_span.set_attributes({"gateway.image_bytes": sum(got), "gateway.images_failed": failed})
        timings.fetch = time.perf_counter() - start if urls else 0.0
        images = [b for b in fetched if isinstance(b, bytes)]
        if not images:
            # Every image of the batch failed: nothing to ask the model, which may be down meanwhile.
            timings.total = time.perf_counter() - start
            return Classification(
                results=tuple(r for r in fetched if not isinstance(r, bytes)),
                model_name=self._model_name,
                model_version=None,
                signature_name=None,
                timings=timings,
                decoding=decoding,
                preprocessing=decoding.apply(self._serving.target.preprocessing),
            )
        info = await self._serving.info()

        # One deadline covers the wait for a slot and the Predict call: a queue behind a slow TF
        # Serving must not stretch a request past it (at most `deadline` plus the decode).
        queued = time.perf_counter()
        try:
            # asyncio.timeout, not wait_for: no task per request to run the wait in.
            async with asyncio.timeout(self._deadline):
                await self.slots.acquire()
        except TimeoutError:
            late = ModelDeadlineExceeded(
                f"TF Serving is answering too slowly: this request waited {self._deadline:g} s for its turn"
            )
            tracing.stage("queue", queued, time.perf_counter(), error=late)
            raise late from None
        try:
            timings.queue = time.perf_counter() - queued
            tracing.stage("queue", queued, queued + timings.queue)
            loop = asyncio.get_running_loop()
            # In the request's context: its trace and request id go with it to the decode thread.
            call, decoded, decode_s, preprocess_s = await loop.run_in_executor(
                self._pool,
                contextvars.copy_context().run,
                _predict_call, images, info, self._serving, each, decoding, choice, facts,
            )  # fmt: skip
            timings.decode, timings.preprocess = decode_s, preprocess_s

            version = None
            rows: list[tuple[float, ...]] = []
            if call is not None:
                t = time.perf_counter()
                remaining = max(self._deadline - timings.queue, _MIN_PREDICT_TIMEOUT)
                with tracing.span("predict") as predict_span:
                    if predict_span.is_recording():
                        predict_span.set_attributes(_predict_attributes(self._serving, info, call))
                    logits, version = await self._serving.predict(
                        info, call, timeout=remaining, metadata=tracing.grpc_metadata()
                    )
                    if version is not None:
                        predict_span.set_attribute("model.version", version)
                self._metrics.served_by(version)
                timings.predict = time.perf_counter() - t
                rows = [tuple(float(x) for x in row) for row in logits]
        finally:
            self.slots.release()
        timings.total = time.perf_counter() - start

        for stage in STAGES:
            if stage != "fetch" or timings.fetch:
                self._metrics.stage_seconds.labels(stage).observe(getattr(timings, stage))
        # The fetched images, each replaced by its result or by why it could not be decoded.
        outcomes = iter(decoded)
        scores = iter(rows)
        results: list[ImageResult | ImageError] = []
        for item in fetched:
            if not isinstance(item, bytes):
                results.append(item)
            elif (outcome := next(outcomes)) is not None:
                results.append(outcome)
            else:
                results.append(ImageResult(next(scores), info.labels))
        self._metrics.images.inc(sum(isinstance(r, ImageResult) for r in results))
        classification = Classification(
            results=tuple(results),
            model_name=self._model_name,
            model_version=version,
            signature_name=info.signature.signature_name,
            timings=timings,
            decoding=decoding,
            preprocessing=decoding.apply(info.preprocessing),
        )
        if log is not None and facts is not None:
            decode = decoding.report(classification.preprocessing)
            log.record(classification, sources, fetched, facts, decode)
        return classification

    async def _all_bytes(self, sources: Sequence[ImageSource], each: bool) -> list[bytes | ImageError]:
        """Every image's bytes, URLs fetched concurrently. With `each`, a failed fetch is kept in
        its slot; otherwise the first failure cancels the rest and is raised."""
        if len(sources) == 1 and not each:
            # The common case needs no task of its own (one less per request on the event loop).
            return [await self._bytes_of(0, sources[0], 1)]
        if each:
            n = len(sources)
            return list(await asyncio.gather(*(self._bytes_or_error(i, s, n) for i, s in enumerate(sources))))
        # A batch: refuse a bad URL before fetching the others. A single URL is checked by the
        # fetch itself, before any traffic, with the same answer.
        for source in sources:
            if source.url is not None:
                check_url(source.url)
        tasks = [asyncio.ensure_future(self._bytes_of(i, s, len(sources))) for i, s in enumerate(sources)]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            raise

    async def _bytes_or_error(self, index: int, source: ImageSource, count: int) -> bytes | ImageError:
        try:
            if source.b64 is not None:
                return await self._decoded(index, source.b64, count)
            # A fetch error stands in its own slot: its position names the image.
            return await self._bytes_of(0, source, 1)
        except GatewayError as e:
            return e

    async def _bytes_of(self, index: int, source: ImageSource, count: int) -> bytes:
        if source.data is not None:
            return source.data
        if source.b64 is not None:
            return await self._decoded(index, source.b64, count)
        assert source.url is not None
        try:
            return await self._fetcher.fetch(source.url)
        except GatewayError as e:
            if count == 1:
                raise
            raise type(e)(f"image {index + 1}: {e.message}", detail=e.detail) from None


    async def _decoded(self, index: int, text: str, count: int) -> bytes:
        what = f"image {index + 1}" if count > 1 else "the image"
        if len(text) < _B64_ON_LOOP:
            return decode_image_b64(text, self._max_image_bytes, what)
        # A few MB take milliseconds: off the event loop, like the image decode.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, decode_image_b64, text, self._max_image_bytes, what)


def _predict_call(
    images: Sequence[bytes],
    info: ModelInfo,
    serving: ServingClient,
    each: bool,
    decoding: Decoding,
    choice: ModelChoice,
    facts: list[ImageFacts] | None = None,
) -> tuple[PredictCall | None, list[PreprocessingError | None], float, float]:
    """Decode every image into one batch, normalise it unless the model takes pixels, serialise the
    request (in the thread pool). With `each`, an image that cannot be decoded is left out of the
    batch and its error returned in its place (None for those in the batch); no call if none is
    left. `decoding` is applied to the model's preprocessing (a cached copy per combination).
    `facts`, when given, gets each image's digest, size and stored dimensions (prediction log)."""
    config = decoding.apply(info.preprocessing)
    h, w = config.target_size
    t0 = time.perf_counter()
    # Each decoded image goes straight into its slot of a uint8 batch; for a float32 signature the
    # batch is then normalised in one pass into a C-ordered float32 one (decode and preprocess are
    # timed apart, so this is not preprocess_batch).
    batch = np.empty((len(images), h, w, 3), dtype=np.uint8)
    errors: list[PreprocessingError | None] = []
    n = 0
    for i, data in enumerate(images):
        try:
            batch[n] = np.asarray(decode_image(data, config))
        except PreprocessingError as e:
            if each:
                errors.append(e)
                continue
            tracing.stage("decode", t0, time.perf_counter(), {"gateway.images": len(images)}, error=e)
            if len(images) == 1:
                raise
            raise type(e)(f"image {i + 1}: {e}") from None
        errors.append(None)
        n += 1
    t1 = time.perf_counter()
    decoding_stage = (
        "decode",
        t0,
        t1,
        {
            "gateway.images": len(images),
            "gateway.images_failed": len(images) - n,
            "gateway.image_bytes": sum(map(len, images)),
        },
    )
    if facts is not None:  # not part of the decode's time: only sampled requests do this
        facts.extend(image_facts(data) for data in images)
    if n == 0:
        tracing.stages(decoding_stage)
        return None, errors, t1 - t0, 0.0
    # The first n slots are C-contiguous still: a view, no copy.
    batch = batch[:n]
    # A pixels signature normalises inside the model; for a float32 one it happens here.
    if info.signature.takes_pixels:
        call = serving.predict_call(info, batch, choice)
    else:
        normalised = normalize_into(batch, np.empty(batch.shape, dtype=np.float32), config.family)
        call = serving.predict_call(info, normalised, choice)
    t2 = time.perf_counter()
    tracing.stages(
        decoding_stage,
        (
            "preprocess",
            t1,
            t2,
            {
                "gateway.images": n,
                "model.signature": info.signature.signature_name,
                "gateway.request_bytes": len(call.request),
            },
        ),
    )
    return call, errors, t1 - t0, t2 - t1


def _predict_attributes(serving: ServingClient, info: ModelInfo, call: PredictCall) -> dict[str, Any]:
    """The predict span's attributes: the call, and the model it asks for."""
    attributes: dict[str, Any] = {
        "rpc.system": "grpc",
        "rpc.service": "tensorflow.serving.PredictionService",
        "rpc.method": "Predict",
        "model.name": serving.target.model_name,
        "model.signature": info.signature.signature_name,
        "gateway.images": call.images,
        "gateway.request_bytes": len(call.request),
    }
    if call.choice.version is not None:
        attributes["model.version_asked"] = call.choice.version
    if call.choice.label is not None:
        attributes["model.label"] = call.choice.label
    return attributes
