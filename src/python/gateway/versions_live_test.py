"""Version pinning and the canary split against a real model server serving three versions of one
model from a TF Serving model config: version 1 with another signature (an older export), versions
2 and 3 with the gateway's signature and different weights, labelled stable=2 and canary=3."""

from __future__ import annotations

import base64
import math
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from clothing_preproc import CLOTHING_LABELS, preprocess_image
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_MODEL_NAME, COURSE_OUTPUT_NAME
from gateway import parse_settings
from gateway.versions import client_bucket
from testing_support.image_host import image_bytes
from testing_support.in_process_gateway import RunningGateway
from testing_support.model_server_process import ServerProcess
from testing_support.sample_models import IMAGE_SHAPE, run_saved_model, tiny_keras_model, write_image_model

RunGateway = Callable[..., RunningGateway]
MODEL = COURSE_MODEL_NAME
IMAGE = image_bytes("JPEG", (120, 90), (200, 30, 60))
B64 = base64.b64encode(IMAGE).decode()
STABLE, CANARY, OTHER_SIGNATURE = 2, 3, 1
# "old" names the version whose signature the gateway cannot use: a canary that fails every request.
LABELS = {"stable": STABLE, "canary": CANARY, "old": OTHER_SIGNATURE}


def write_other_signature_model(version_dir: Path) -> None:
    """An export whose serving_default takes `image` and answers `probs`: not what the gateway sends."""
    import keras
    import tensorflow as tf

    model = tiny_keras_model(7)
    archive = keras.export.ExportArchive()
    spec = [tf.TensorSpec((None, *IMAGE_SHAPE), tf.float32, name="image")]
    archive.add_endpoint("serving_default", tf.function(lambda x: {"probs": model(x)}), input_signature=spec)
    archive.write_out(str(version_dir), verbose=False)


def model_config(base: Path, labels: dict[str, int]) -> str:
    label_text = " ".join(f"version_labels {{ key: '{k}' value: {v} }}" for k, v in labels.items())
    return (
        f"model_config_list {{ config {{ name: '{MODEL}' base_path: '{base}' model_platform: 'tensorflow' "
        "model_version_policy { specific { versions: 1 versions: 2 versions: 3 } } "
        f"{label_text} }} }}\n"
    )


class Versions:
    def __init__(
        self, server: ServerProcess, config: Path, base: Path, logits: dict[int, list[float]]
    ) -> None:
        self.server = server
        self.config = config
        self.base = base
        self.logits = logits  # the reference: each version's SavedModel run with TensorFlow

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Versions]:
    base = tmp_path_factory.mktemp("models") / MODEL
    write_other_signature_model(base / str(OTHER_SIGNATURE))
    write_image_model(base / str(STABLE), seed=1)
    write_image_model(base / str(CANARY), seed=2)
    pixels = preprocess_image(IMAGE)[None]
    logits = {
        v: run_saved_model(base / str(v), {COURSE_INPUT_NAME: pixels})[COURSE_OUTPUT_NAME][0].tolist()
        for v in (STABLE, CANARY)
    }
    assert not np.allclose(logits[STABLE], logits[CANARY], rtol=1e-3), "the two versions must differ"
    config = base.parent / "models.config"
    config.write_text(model_config(base, LABELS), encoding="utf-8")
    flags = [
        "--model_config_file", str(config),
        "--model_config_file_poll_wait_seconds", "1",
        # TF Serving checks labels before loading anything: the first config's need this.
        "--allow_version_labels_for_unavailable_models",
    ]  # fmt: skip
    with ServerProcess.start(flags) as server:
        yield Versions(server, config, base, logits)


def gateway_for(run_gateway: RunGateway, versions: Versions, **variables: str) -> RunningGateway:
    return run_gateway(parse_settings([], {"TF_SERVING_HOST": versions.address} | variables))


@pytest.fixture()
def gateway(run_gateway: RunGateway, versions: Versions) -> RunningGateway:
    return gateway_for(run_gateway, versions)


def close(actual: list[float], expected: list[float]) -> bool:
    return bool(np.allclose(actual, expected, rtol=1e-5, atol=1e-6))


def v2_body() -> dict[str, Any]:
    return {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [B64]}]}


def answers(url: str) -> dict[str, Callable[[str, str], tuple[int | None, str | None, list[float]]]]:
    """Each route family, asked with a query string or a version/label path segment; each gives
    (the version its answer says, the label it says, the logits)."""

    def predict(query: str, segment: str) -> tuple[int | None, str | None, list[float]]:
        r = httpx.post(f"{url}/predict{query}", json={"b64": B64})
        assert r.status_code == 200, r.text
        said = int(r.headers["x-model-version"])
        return said, r.headers.get("x-model-version-label"), list(r.json().values())

    def classify(query: str, segment: str) -> tuple[int | None, str | None, list[float]]:
        sep = "&" if query else "?"
        r = httpx.post(
            f"{url}/v1/classify{query}{sep}logits=true", content=IMAGE, headers={"content-type": "image/jpeg"}
        )
        assert r.status_code == 200, r.text
        model = r.json()["model"]
        assert int(r.headers["x-model-version"]) == model["version"]
        return model["version"], model.get("label"), list(r.json()["logits"].values())

    def batch(query: str, segment: str) -> tuple[int | None, str | None, list[float]]:
        sep = "&" if query else "?"
        r = httpx.post(f"{url}/v1/classify/batch{query}{sep}logits=true", json={"images": [{"b64": B64}]})
        assert r.status_code == 200, r.text
        model = r.json()["model"]
        return model["version"], model.get("label"), list(r.json()["results"][0]["logits"].values())

    def tf_serving(query: str, segment: str) -> tuple[int | None, str | None, list[float]]:
        r = httpx.post(f"{url}/v1/models/{MODEL}{segment}:predict{query}", json={"instances": [{"b64": B64}]})
        assert r.status_code == 200, r.text
        (prediction,) = r.json()["predictions"]
        assert prediction["classes"] == list(CLOTHING_LABELS)
        return int(r.headers["x-model-version"]), r.headers.get("x-model-version-label"), prediction["logits"]

    def v2(query: str, segment: str) -> tuple[int | None, str | None, list[float]]:
        if segment.startswith("/labels/"):  # v2 has no label path: the query says it
            query, segment = f"?label={segment.removeprefix('/labels/')}", ""
        r = httpx.post(f"{url}/v2/models/{MODEL}{segment}/infer{query}", json=v2_body())
        assert r.status_code == 200, r.text
        body = r.json()
        logits = next(o for o in body["outputs"] if o["name"] == "logits")
        return int(body["model_version"]), r.headers.get("x-model-version-label"), logits["data"]

    return {"predict": predict, "classify": classify, "batch": batch, "tf_serving": tf_serving, "v2": v2}


ROUTES = ("predict", "classify", "batch", "tf_serving", "v2")


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_answers_with_the_version_pinned_and_says_which(
    gateway: RunningGateway, versions: Versions, route: str
) -> None:
    ask = answers(gateway.url)[route]
    # No choice: TF Serving's latest version.
    assert ask("", "")[:2] == (CANARY, None)
    for version in (STABLE, CANARY):
        said, label, logits = ask(f"?version={version}", "")
        assert (said, label) == (version, None)
        assert close(logits, versions.logits[version]), (route, version)
    for label, version in (("stable", STABLE), ("canary", CANARY)):
        said, said_label, logits = ask(f"?label={label}", "")
        assert (said, said_label) == (version, label)
        assert close(logits, versions.logits[version]), (route, label)
    if route in ("tf_serving", "v2"):
        # The protocols' own path forms.
        said, _, logits = ask("", f"/versions/{STABLE}")
        assert said == STABLE
        assert close(logits, versions.logits[STABLE])
        said, said_label, logits = ask("", "/labels/stable")
        assert (said, said_label) == (STABLE, "stable")
        assert close(logits, versions.logits[STABLE])


def error_message(r: httpx.Response) -> str:
    error = r.json()["error"]
    return error if isinstance(error, str) else str(error["message"])


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/classify?version=7", {"b64": B64}),
        ("POST", "/v1/classify?label=beta", {"b64": B64}),
        ("POST", "/predict?version=7", {"b64": B64}),
        ("POST", "/v1/classify/batch?label=beta", {"images": [{"b64": B64}]}),
        ("POST", f"/v1/models/{MODEL}/versions/7:predict", {"instances": [{"b64": B64}]}),
        ("POST", f"/v1/models/{MODEL}/labels/beta:predict", {"instances": [{"b64": B64}]}),
        ("POST", f"/v2/models/{MODEL}/versions/7/infer", v2_body()),
        ("POST", f"/v2/models/{MODEL}/infer?label=beta", v2_body()),
        ("GET", f"/v2/models/{MODEL}/versions/7", None),
        ("GET", f"/v1/models/{MODEL}/versions/7", None),
        ("GET", f"/v1/models/{MODEL}/labels/beta/metadata", None),
    ],
)
def test_an_unknown_version_or_label_is_a_404_listing_the_versions_served(
    gateway: RunningGateway, method: str, path: str, body: object
) -> None:
    r = httpx.request(method, gateway.url + path, json=body)
    assert r.status_code == 404, r.text
    message = error_message(r)
    assert message.endswith("versions available: 1, 2, 3"), message
    assert re.search(r"(version 7|label 'beta') names no version", message), message
    if not path.startswith(("/v1/models/", "/v2/")):
        assert r.json()["error"]["code"] == "version_not_found"


def test_v2_model_metadata_and_readiness_by_version(gateway: RunningGateway) -> None:
    ready = httpx.get(f"{gateway.url}/v2/models/{MODEL}/versions/{STABLE}/ready")
    assert (ready.status_code, ready.json()["ready"]) == (200, True)
    missing = httpx.get(f"{gateway.url}/v2/models/{MODEL}/versions/7/ready")
    assert (missing.status_code, missing.json()["ready"]) == (400, False)
    metadata = httpx.get(f"{gateway.url}/v2/models/{MODEL}/versions/{CANARY}").json()
    assert metadata["versions"] == ["1", "2", "3"]
    assert metadata["name"] == MODEL


def test_tf_serving_rest_status_and_metadata_by_version_and_label(gateway: RunningGateway) -> None:
    """As TF Serving's REST API answers: every AVAILABLE version, or the one the path names."""
    base = f"{gateway.url}/v1/models/{MODEL}"

    def statuses(path: str) -> list[tuple[str, str]]:
        r = httpx.get(base + path)
        assert r.status_code == 200, r.text
        return [(s["version"], s["state"]) for s in r.json()["model_version_status"]]

    assert statuses("") == [("1", "AVAILABLE"), ("2", "AVAILABLE"), ("3", "AVAILABLE")]
    assert statuses(f"/versions/{STABLE}") == [(str(STABLE), "AVAILABLE")]
    assert statuses("/labels/canary") == [(str(CANARY), "AVAILABLE")]

    def metadata(path: str) -> dict[str, Any]:
        r = httpx.get(base + path + "/metadata")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    latest = metadata("")
    assert latest["model_spec"] == {"name": MODEL, "signature_name": "", "version": str(CANARY)}
    signature = latest["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert set(signature["inputs"]) == {"image_bytes"}
    assert signature["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert set(signature["outputs"]) == {"scores", "classes", "logits"}
    dims = signature["outputs"]["scores"]["tensor_shape"]["dim"]
    assert [d["size"] for d in dims] == ["-1", "10"]
    assert metadata("/labels/stable")["model_spec"]["version"] == str(STABLE)
    assert metadata(f"/versions/{CANARY}")["model_spec"]["version"] == str(CANARY)


def test_a_version_with_another_signature_is_a_clear_error_not_wrong_scores(gateway: RunningGateway) -> None:
    r = httpx.post(f"{gateway.url}/v1/classify?version={OTHER_SIGNATURE}", json={"b64": B64})
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "model_error"
    message = r.json()["error"]["message"]
    expected = f"version {OTHER_SIGNATURE} of model '{MODEL}' does not take the requests"
    assert message.startswith(expected), message
    assert "must share one signature" in message
    # The latest version, and so the gateway, are unharmed.
    assert httpx.post(f"{gateway.url}/v1/classify", json={"b64": B64}).json()["model"]["version"] == CANARY


def metric(page: str, name: str, **labels: str) -> float:
    """The sum of a counter's samples whose labels include these."""
    total = 0.0
    for line in page.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_ten_percent_canary_splits_requests_and_the_metrics_show_both_versions(
    run_gateway: RunGateway, versions: Versions
) -> None:
    gateway = gateway_for(run_gateway, versions, GATEWAY_CANARY_PERCENT="10")
    n = 400
    served: list[int] = []
    with httpx.Client(base_url=gateway.url) as client:
        for _ in range(n):
            r = client.post("/v1/classify", content=IMAGE, headers={"content-type": "image/jpeg"})
            assert r.status_code == 200, r.text
            model = r.json()["model"]
            assert model["label"] == {STABLE: "stable", CANARY: "canary"}[model["version"]]
            served.append(model["version"])
        page = client.get("/metrics").text
    canary = served.count(CANARY)
    # Binomial(400, 0.1): mean 40, standard deviation 6; four of them either side.
    assert abs(canary - n * 0.1) <= 4 * math.sqrt(n * 0.1 * 0.9), canary
    assert served.count(STABLE) == n - canary
    # One scrape shows both versions, and what the split sent where.
    route = {"route": "/v1/classify", "status": "200"}
    assert metric(page, "gateway_requests_total", model_version=str(CANARY), **route) == canary
    assert metric(page, "gateway_requests_total", model_version=str(STABLE), **route) == n - canary
    assert metric(page, "gateway_rollout_requests_total", label="canary", status="200") == canary
    assert metric(page, "gateway_rollout_requests_total", label="stable", status="200") == n - canary


def test_a_failing_canary_shows_in_the_split_counts_by_status(
    run_gateway: RunGateway, versions: Versions
) -> None:
    # The canary side is a version that refuses every request: its failures have no served version,
    # but the split's count says which side failed them.
    gateway = gateway_for(run_gateway, versions, GATEWAY_CANARY_PERCENT="50", GATEWAY_CANARY_LABEL="old")
    statuses = []
    with httpx.Client(base_url=gateway.url) as client:
        for i in range(40):
            r = client.post("/v1/classify", json={"b64": B64}, headers={"X-Client-ID": f"client-{i}"})
            statuses.append(r.status_code)
        page = client.get("/metrics").text
    failed = sum(client_bucket(f"client-{i}") < 50 for i in range(40))
    assert statuses.count(502) == failed > 0
    assert statuses.count(200) == 40 - failed
    assert metric(page, "gateway_rollout_requests_total", label="old", status="502") == failed
    assert metric(page, "gateway_rollout_requests_total", label="stable", status="200") == 40 - failed
    unattributed = {"route": "/v1/classify", "status": "502", "model_version": ""}
    assert metric(page, "gateway_requests_total", **unattributed) == failed


def test_a_client_id_keeps_a_client_on_one_version(run_gateway: RunGateway, versions: Versions) -> None:
    gateway = gateway_for(
        run_gateway, versions, GATEWAY_CANARY_PERCENT="50", GATEWAY_CLIENT_ID_HEADER="X-User"
    )
    seen: dict[str, set[int]] = {}
    with httpx.Client(base_url=gateway.url) as client:
        for i in range(30):
            user = f"user-{i}"
            for _ in range(3):
                r = client.post("/v1/classify", json={"b64": B64}, headers={"X-User": user})
                seen.setdefault(user, set()).add(r.json()["model"]["version"])
    assert all(len(v) == 1 for v in seen.values()), seen
    # Each on the side its id hashes to, and both sides used.
    assert {u: v.pop() for u, v in seen.items()} == {
        f"user-{i}": CANARY if client_bucket(f"user-{i}") < 50 else STABLE for i in range(30)
    }


def test_moving_a_label_in_the_model_config_moves_traffic_without_touching_the_gateway(
    gateway: RunningGateway, versions: Versions
) -> None:
    def stable_version() -> int:
        r = httpx.post(f"{gateway.url}/v1/classify?label=stable", json={"b64": B64})
        return int(r.json()["model"]["version"])

    assert stable_version() == STABLE
    original = versions.config.read_text(encoding="utf-8")
    try:
        # Promote: stable now names the canary's version (AVAILABLE, so the move is allowed).
        promoted = model_config(versions.base, LABELS | {"stable": CANARY})
        versions.config.write_text(promoted, encoding="utf-8")
        deadline = time.monotonic() + 30
        while stable_version() != CANARY:
            assert time.monotonic() < deadline, "the model server never took the new labels"
            time.sleep(0.2)
    finally:
        versions.config.write_text(original, encoding="utf-8")
        deadline = time.monotonic() + 30
        while stable_version() != STABLE and time.monotonic() < deadline:
            time.sleep(0.2)
