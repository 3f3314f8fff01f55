"""TF Serving's REST API (what KServe calls the v1 protocol): request bodies -> `ImageSource`s,
results -> `predictions` / `outputs`.

An adapter only: the images go to `Classifier.classify` like every other route's, and errors are
answered by the app's one handler (in TF Serving's `{"error": "…"}` shape on these paths).

Request forms, as TF Serving's REST API writes binary inputs (base64 in a `{"b64": …}` object):
- row format: `{"instances": [{"b64": "…"}, …]}` or `{"instances": [{"image_bytes": {"b64": "…"}}, …]}`;
- columnar format: `{"inputs": [{"b64": "…"}, …]}` or `{"inputs": {"image_bytes": [{"b64": "…"}, …]}}`.

The answer has one entry per image, in order, with three named outputs, as TF Serving answers a
model with several outputs (a classification head's `scores` and `classes`, plus the raw logits):
- row format: `{"predictions": [{"scores": [p, …], "classes": ["label", …], "logits": [x, …]}, …]}`;
- columnar format: `{"outputs": {"scores": [[p, …], …], "classes": [[…], …], "logits": [[…], …]}}`.
`scores` are softmax probabilities and `classes` the class names, both in the model's output
order (every image gets the same `classes`: a class's score is at its index).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.classify import ImageResult, ImageSource
from gateway.errors import BadRequest

IMAGE_KEY = "image_bytes"


def sources(body: Any, max_images: int) -> tuple[list[ImageSource], bool]:
    """The images of a predict request, and whether it used the row (`instances`) format."""
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise BadRequest('send {"instances": [{"b64": "…"}, …]} or {"inputs": …} (one of the two)')
    row = "instances" in body
    items = body["instances"] if row else body["inputs"]
    if not row and isinstance(items, dict):
        if set(items) != {IMAGE_KEY}:
            raise BadRequest(f'"inputs" as an object must hold one input, "{IMAGE_KEY}"')
        items = items[IMAGE_KEY]
    key = "instances" if row else "inputs"
    if not isinstance(items, list) or not items:
        raise BadRequest(f'"{key}" must be a non-empty list of images ({{"b64": "…"}})')
    if len(items) > max_images:
        raise BadRequest(f"{len(items)} images in one request; the limit is {max_images}")
    return [_image(item, f'"{key}" item {i + 1}') for i, item in enumerate(items)], row


def _image(item: Any, where: str) -> ImageSource:
    if isinstance(item, dict) and set(item) == {IMAGE_KEY}:
        item = item[IMAGE_KEY]
    if not isinstance(item, dict) or set(item) != {"b64"} or not isinstance(item["b64"], str):
        raise BadRequest(f'{where} must be {{"b64": "…"}} or {{"{IMAGE_KEY}": {{"b64": "…"}}}}')
    return ImageSource(b64=item["b64"])


def predict_response(results: Sequence[ImageResult], row: bool) -> dict[str, object]:
    rows = [
        {"scores": list(r.probabilities().values()), "classes": list(r.labels), "logits": list(r.logits)}
        for r in results
    ]
    if row:
        return {"predictions": rows}
    return {"outputs": {name: [r[name] for r in rows] for name in ("scores", "classes", "logits")}}


def model_status(versions: Sequence[int], ready: bool, reason: str) -> dict[str, object]:
    """GET /v1/models/{name}: TF Serving's GetModelStatus answer as its REST API writes it."""
    if not versions:
        unavailable = {"error_code": "UNAVAILABLE", "error_message": reason}
        return {"model_version_status": [{"version": "0", "state": "UNKNOWN", "status": unavailable}]}
    status = {"error_code": "OK", "error_message": ""}
    if not ready:
        status = {"error_code": "UNAVAILABLE", "error_message": reason}
    return {
        "model_version_status": [
            {"version": str(v), "state": "AVAILABLE", "status": status} for v in versions
        ]
    }


def model_metadata(name: str, version: int | None, labels: Sequence[str]) -> dict[str, object]:
    """GET /v1/models/{name}/metadata: the signature the gateway's predict routes offer, in TF
    Serving's REST layout (the SignatureDefMap's JSON under metadata.signature_def). It is the
    gateway's signature, not the model's: encoded images in, scores, classes and logits out."""

    def tensor(alias: str, dtype: str, *dims: int) -> dict[str, object]:
        shape = {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False}
        return {"name": alias, "dtype": dtype, "tensor_shape": shape}

    n = len(labels)
    signature = {
        "inputs": {IMAGE_KEY: tensor(IMAGE_KEY, "DT_STRING", -1)},
        "outputs": {
            "scores": tensor("scores", "DT_FLOAT", -1, n),
            "classes": tensor("classes", "DT_STRING", -1, n),
            "logits": tensor("logits", "DT_FLOAT", -1, n),
        },
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {
            "name": name,
            "signature_name": "",
            "version": "" if version is None else str(version),
        },
        "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}},
    }
