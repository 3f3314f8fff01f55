"""The HTTP endpoints: thin adapters from requests to `Classifier.classify` and back to JSON."""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from clothing_preproc import ModelDescription
from gateway import kserve_v2, tf_serving_rest
from gateway.classify import Classification, Classifier, ImageError, ImageResult
from gateway.decode_options import HEADER as PREPROCESSING_HEADER
from gateway.decode_options import DecodeOptions
from gateway.errors import BadRequest, VersionNotFound, error_body
from gateway.inputs import (
    LOGITS_VALUES,
    TOP_K_DEFAULT,
    TOP_K_MAX,
    json_limit,
    read_body,
    read_json,
    read_sources,
    source_of,
)
from gateway.metrics import Metrics
from gateway.serving import ServingClient
from gateway.settings import Rollout, ServingTarget
from gateway.versions import (
    LATEST,
    MODEL_LABEL_HEADER,
    MODEL_VERSION_HEADER,
    CanarySplit,
    ModelChoice,
    not_served,
    parse_version,
    requested_choice,
)

# The page and its assets are files of this package (no CDN, nothing loaded from elsewhere).
_STATIC = {
    "page.css": "text/css; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
}
# Pasted image URLs are previewed straight from their host, hence img-src http: https:.
_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: http: https:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def _static(name: str) -> bytes:
    return resources.files("gateway").joinpath("static", name).read_bytes()


@dataclass(frozen=True)
class Services:
    """The long-lived clients, created in the app's lifespan and kept in its state, which Starlette
    hands every request as `request.state`."""

    serving: ServingClient
    classifier: Classifier


def _services(request: Request) -> Services:
    services: Services = request.state.services
    return services


class Api:
    def __init__(
        self,
        target: ServingTarget,
        metrics: Metrics,
        openapi: dict[str, object],
        description: ModelDescription | None = None,
        decoding: DecodeOptions | None = None,
        rollout: Rollout | None = None,
    ) -> None:
        """`description`: the served model's, when the gateway was given it; its `trained` flag is
        part of every answer's model block, and the page warns when it is false. `decoding`: the
        operator's decode options and which of them a request may set. `rollout`: the canary
        split of the requests that pin no model version."""
        self.target = target
        self.versions = CanarySplit(rollout or Rollout(), routed=metrics.routed)
        if self.versions.active:  # both sides in the first scrape: no answers yet
            for side in (self.versions.stable, self.versions.canary):
                metrics.rollout_requests.labels(side.label, "200")
        self.decoding = decoding or DecodeOptions()
        self.description = description
        self.metrics = metrics
        self.openapi = openapi
        self._page = _static("index.html")
        self._assets = {name: _static(name) for name in _STATIC}

    async def page(self, request: Request) -> Response:
        return Response(
            self._page,
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": _PAGE_CSP, "X-Content-Type-Options": "nosniff"},
        )

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self._assets:
            raise HTTPException(404, f"no asset named {name}")
        return Response(
            self._assets[name],
            media_type=_STATIC[name],
            headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    async def predict(self, request: Request) -> Response:
        """The course's endpoint: `{"url": …}` (or `{"b64": …}`) -> `{class: logit}`."""
        with self.metrics.request_seconds.labels("/predict").time():
            choice = self.versions.choose(request)
            decoding = self.decoding.for_request(request.query_params)
            body = await read_json(request, json_limit(1, self.target.limits.max_bytes))
            result = await _services(request).classifier.classify(
                [source_of(body)], decoding=decoding, choice=choice
            )
            # The course's answer is {class: logit} and nothing else: the options go in headers.
            headers = _preprocessing_header(result) | _version_headers(result, choice)
            return JSONResponse(_only(result).scores(), headers=headers)

    async def classify(self, request: Request) -> Response:
        with self.metrics.request_seconds.labels("/v1/classify").time():
            top_k, logits = _options(request)
            choice = self.versions.choose(request)
            decoding = self.decoding.for_request(request.query_params)
            sources = await read_sources(
                request, max_images=1, max_image_bytes=self.target.limits.max_bytes
            )
            if len(sources) != 1:
                raise BadRequest("send one image here; several go to /v1/classify/batch")
            result = await _services(request).classifier.classify(sources, decoding=decoding, choice=choice)
            body = self._model(result, choice) | _image(_only(result), top_k, logits)
            body["preprocessing"] = result.decoding.report(result.preprocessing)
            body["timings_ms"] = result.timings.as_ms()
            headers = _preprocessing_header(result) | _version_headers(result, choice)
            return JSONResponse(body, headers=headers)

    async def classify_batch(self, request: Request) -> Response:
        with self.metrics.request_seconds.labels("/v1/classify/batch").time():
            top_k, logits = _options(request)
            choice = self.versions.choose(request)
            decoding = self.decoding.for_request(request.query_params)
            sources = await read_sources(
                request, max_images=self.target.max_batch, max_image_bytes=self.target.limits.max_bytes
            )
            result = await _services(request).classifier.classify(
                sources, each=True, decoding=decoding, choice=choice
            )
            body = self._model(result, choice)
            body["preprocessing"] = result.decoding.report(result.preprocessing)
            body["results"] = [self._image_or_error(r, top_k, logits) for r in result.results]
            body["timings_ms"] = result.timings.as_ms()
            headers = _preprocessing_header(result) | _version_headers(result, choice)
            return JSONResponse(body, headers=headers)

    def _model(self, result: Classification, choice: ModelChoice = LATEST) -> dict[str, object]:
        model: dict[str, object] = {
            "name": result.model_name,
            "version": result.model_version,
            "signature": result.signature_name,
        }
        if choice.label is not None:
            model["label"] = choice.label
        if self.description is not None:
            model["trained"] = self.description.trained
        return {"model": model}

    def _image_or_error(
        self, result: ImageResult | ImageError, top_k: int, logits: bool
    ) -> dict[str, object]:
        if isinstance(result, ImageResult):
            return _image(result, top_k, logits)
        body = error_body(result)
        self.metrics.errors.labels(body["error"]["code"]).inc()
        return dict(body)

    def _model_named(self, request: Request) -> str:
        name = str(request.path_params["name"])
        if name != self.target.model_name:
            served = self.target.model_name
            raise HTTPException(404, f"no model named {name[:100]!r}; this gateway serves {served!r}")
        return name

    async def v2_live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def v2_ready(self, request: Request) -> Response:
        state = await _services(request).serving.readiness()
        # The protocol: 200 is ready, a 4xx is not.
        return JSONResponse({"ready": state.ready}, status_code=200 if state.ready else 400)

    async def v2_model_ready(self, request: Request) -> Response:
        """Ready: the model (or, with /versions/{version}, that version) is AVAILABLE."""
        name = self._model_named(request)
        state = await _services(request).serving.readiness()
        body: dict[str, object] = {"name": name, "ready": state.ready}
        if "version" in request.path_params:
            version = parse_version(request.path_params["version"], "the path's version")
            body["version"] = str(version)
            body["ready"] = state.ready and version in state.versions
        return JSONResponse(body, status_code=200 if body["ready"] else 400)

    async def v2_model(self, request: Request) -> Response:
        """Metadata; with /versions/{version}, 404 unless that version is AVAILABLE."""
        name = self._model_named(request)
        state = await _services(request).serving.readiness()
        if "version" in request.path_params:
            version = parse_version(request.path_params["version"], "the path's version")
            if version not in state.versions:
                raise VersionNotFound(not_served(ModelChoice(version=version), name, state.versions))
        return JSONResponse(kserve_v2.metadata(name, state.versions, self.target.labels))

    async def v2_infer(self, request: Request) -> Response:
        """KServe v2 inference: a BYTES input of encoded images, as base64 JSON or binary data."""
        with self.metrics.request_seconds.labels("/v2/models/{name}/infer").time():
            name = self._model_named(request)
            choice = self.versions.choose(request)
            # Query options are refused before the body is read; the body's parameters after.
            self.decoding.for_request(request.query_params)
            max_images, max_bytes = self.target.max_batch, self.target.limits.max_bytes
            limit = max(json_limit(max_images, max_bytes), kserve_v2.element_limit(max_images, max_bytes))
            body = await read_body(request, limit, "the inference request")
            infer = kserve_v2.InferRequest.from_rest(
                body,
                request.headers.get(kserve_v2.HEADER_LENGTH),
                max_images=max_images,
                max_image_bytes=max_bytes,
            )
            decoding = self.decoding.for_request(request.query_params, infer.parameters)
            result = await _services(request).classifier.classify(
                infer.sources, decoding=decoding, choice=choice
            )
            images = [r for r in result.results if isinstance(r, ImageResult)]
            headers = _preprocessing_header(result) | _version_headers(result, choice)
            content, header_length = kserve_v2.infer_response(
                infer,
                name,
                result.model_version,
                images,
                self.target.labels,
                parameters=result.decoding.v2_parameters(result.preprocessing),
            )
            if header_length is None:
                return Response(content, media_type="application/json", headers=headers)
            return Response(
                content,
                media_type="application/octet-stream",
                headers={"Inference-Header-Content-Length": str(header_length), **headers},
            )

    async def v1_predict(self, request: Request) -> Response:
        """TF Serving's REST predict: `instances` or `inputs` of `{"b64": …}` images."""
        with self.metrics.request_seconds.labels("/v1/models/{name}:predict").time():
            self._model_named(request)
            choice = self.versions.choose(request)
            decoding = self.decoding.for_request(request.query_params)
            max_images, max_bytes = self.target.max_batch, self.target.limits.max_bytes
            body = await read_json(request, json_limit(max_images, max_bytes))
            images, row = tf_serving_rest.sources(body, max_images)
            result = await _services(request).classifier.classify(images, decoding=decoding, choice=choice)
            results = [r for r in result.results if isinstance(r, ImageResult)]
            # TF Serving's REST answer has no place for the version: the headers say it.
            return JSONResponse(
                tf_serving_rest.predict_response(results, row),
                headers=_preprocessing_header(result) | _version_headers(result, choice),
            )

    async def v1_model_status(self, request: Request) -> Response:
        """TF Serving REST model status; with /versions/{version} or /labels/{label}, that version's
        alone, as TF Serving answers (404 listing the AVAILABLE versions if it names none)."""
        name = self._model_named(request)
        state = await _services(request).serving.readiness()
        versions = await self._v1_versions(request, name, state.versions)
        return JSONResponse(tf_serving_rest.model_status(versions, state.ready, state.reason))

    async def v1_model_metadata(self, request: Request) -> Response:
        """TF Serving REST model metadata: the signature this gateway offers (encoded images in;
        scores, classes and logits out), for the latest version or the one the path names."""
        name = self._model_named(request)
        state = await _services(request).serving.readiness()
        versions = await self._v1_versions(request, name, state.versions)
        latest = max(versions, default=None)
        return JSONResponse(tf_serving_rest.model_metadata(name, latest, self.target.labels))

    async def _v1_versions(self, request: Request, name: str, available: tuple[int, ...]) -> tuple[int, ...]:
        """The AVAILABLE versions, or the one the path's version or label names."""
        choice = requested_choice(request.path_params, {})
        if choice is None:
            return available
        version = await _services(request).serving.version_of(choice)
        if version is None:
            raise VersionNotFound(not_served(choice, name, available))
        return (version,)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        start = time.perf_counter()
        state = await _services(request).serving.readiness()
        self.metrics.note_readiness(state.ready, state.versions)
        body: dict[str, object] = {
            "ready": state.ready,
            "reason": state.reason,
            "model": self.target.model_name,
            "versions": list(state.versions),
            "checked_in_ms": round((time.perf_counter() - start) * 1000, 3),
        }
        return JSONResponse(body, status_code=200 if state.ready else 503)

    async def metrics_page(self, request: Request) -> Response:
        return metrics_response(self.metrics)

    async def openapi_schema(self, request: Request) -> Response:
        return JSONResponse(self.openapi)


def metrics_response(metrics: Metrics) -> Response:
    """The Prometheus text page, on the gateway's port or GATEWAY_METRICS_PORT's."""
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _options(request: Request) -> tuple[int, bool]:
    raw_k = request.query_params.get("top_k", str(TOP_K_DEFAULT))
    # Plain ASCII digits only: int() would also take " 3", "1_0" and other scripts' digits.
    if not (raw_k.isascii() and raw_k.isdigit()):
        raise BadRequest(f"top_k={raw_k[:20]!r} is not a whole number")
    if len(raw_k) > len(str(TOP_K_MAX)) or not 1 <= int(raw_k) <= TOP_K_MAX:
        raise BadRequest(f"top_k must be between 1 and {TOP_K_MAX}")
    raw_logits = request.query_params.get("logits", "false")
    if raw_logits not in LOGITS_VALUES:
        raise BadRequest("logits must be true or false")
    return int(raw_k), raw_logits in ("true", "1")


def _version_headers(result: Classification, choice: ModelChoice) -> dict[str, str]:
    """`X-Model-Version` (the version that answered) and, when the request went by a version
    label, `X-Model-Version-Label`, on every classification answer."""
    headers: dict[str, str] = {}
    if result.model_version is not None:
        headers[MODEL_VERSION_HEADER] = str(result.model_version)
    if choice.label is not None:
        headers[MODEL_LABEL_HEADER] = choice.label
    return headers


def _preprocessing_header(result: Classification) -> dict[str, str]:
    """`X-Preprocessing`, on every classification answer: the decode options that shaped it."""
    return {PREPROCESSING_HEADER: result.decoding.header_value(result.preprocessing)}


def _only(result: Classification) -> ImageResult:
    """The one result of a request classified whole (its errors were raised, not kept)."""
    (only,) = result.results
    assert isinstance(only, ImageResult)
    return only


def _image(result: ImageResult, top_k: int, logits: bool) -> dict[str, object]:
    body: dict[str, object] = {
        "probabilities": result.probabilities(),
        "top": [{"label": label, "probability": p} for label, p in result.top(top_k)],
    }
    if logits:
        body["logits"] = result.scores()
    return body
