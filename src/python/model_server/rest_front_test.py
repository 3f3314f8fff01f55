"""The REST front against a real server on loopback: TF Serving's paths, formats and errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_OUTPUT_NAME
from model_server.server import ModelServer
from testing_support import sample_models
from testing_support.model_server_process import write_config
from testing_support.ports import free_port


@pytest.fixture(scope="module")
def rest(tmp_path_factory: pytest.TempPathFactory, model_store: Path) -> Iterator[httpx.Client]:
    from model_server.settings import parse_settings

    config = write_config(
        tmp_path_factory.mktemp("config") / "models.config",
        {"tiny": model_store / "tiny", "two": model_store / "two"},
        labels={"tiny": {"stable": 1, "canary": 2}},
    )
    server = ModelServer(
        parse_settings(
            [
                "--port",
                "0",
                "--rest_api_port",
                str(free_port()),
                "--bind_address",
                "127.0.0.1",
                "--model_config_file",
                str(config),
                # The config labels versions, which TF Serving refuses at start without it.
                "--allow_version_labels_for_unavailable_models",
                "--max_request_bytes",
                "30000000",
            ],
            {},
        )
    )
    server.start()
    assert server.wait_ready(120)
    with httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=60) as client:
        yield client
    server.stop(drain_seconds=1)


def test_row_format_predict_matches_the_saved_model(rest: httpx.Client, model_store: Path) -> None:
    images = sample_models.random_images(2, seed=5)
    response = rest.post("/v1/models/tiny:predict", json={"instances": images.tolist()})
    assert response.status_code == 200, response.text
    run = sample_models.run_saved_model(model_store / "tiny" / "2", {COURSE_INPUT_NAME: images})
    expected = run[COURSE_OUTPUT_NAME]
    # JSON carries each float32 as its shortest decimal: parsing it back gives the same float32.
    np.testing.assert_array_equal(np.asarray(response.json()["predictions"], np.float32), expected)


def test_columnar_format_and_versions_and_labels(rest: httpx.Client, model_store: Path) -> None:
    images = sample_models.random_images(1, seed=6)
    for path, version in (
        ("/v1/models/tiny/versions/1:predict", 1),
        ("/v1/models/tiny/labels/canary:predict", 2),
    ):
        response = rest.post(path, json={"inputs": images.tolist()})
        assert response.status_code == 200, response.text
        version_dir = model_store / "tiny" / str(version)
        expected = sample_models.run_saved_model(version_dir, {COURSE_INPUT_NAME: images})
        answered = np.asarray(response.json()["outputs"], np.float32)
        np.testing.assert_array_equal(answered, expected[COURSE_OUTPUT_NAME])


def test_multi_input_row_and_columnar(rest: httpx.Client) -> None:
    rows = rest.post(
        "/v1/models/two:predict",
        json={"instances": [{"a": [1, 2, 3], "b": 4}, {"a": [0.1, 0.2, 0.3], "b": 1}]},
    )
    assert rows.json() == {
        "predictions": [{"scaled": [2.0, 4.0, 6.0], "sum": 10.0}, {"scaled": [0.2, 0.4, 0.6], "sum": 1.6}]
    }
    columns = rest.post("/v1/models/two:predict", json={"inputs": {"a": [[1, 2, 3]], "b": [4]}})
    assert columns.json() == {"outputs": {"scaled": [[2.0, 4.0, 6.0]], "sum": [10.0]}}


def test_status_and_metadata(rest: httpx.Client) -> None:
    status = rest.get("/v1/models/tiny")
    assert status.status_code == 200
    assert status.json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
            {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        ]
    }
    one = rest.get("/v1/models/tiny/versions/2").json()["model_version_status"]
    assert [s["version"] for s in one] == ["2"]
    metadata = rest.get("/v1/models/tiny/versions/1/metadata").json()
    assert metadata["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert [d["size"] for d in signature["inputs"][COURSE_INPUT_NAME]["tensor_shape"]["dim"]] == [
        "-1",
        "299",
        "299",
        "3",
    ]
    assert signature["outputs"][COURSE_OUTPUT_NAME]["dtype"] == "DT_FLOAT"
    # TF Serving's keys, no empty `defaults` map (its own expected metadata has none).
    assert set(signature) == {"inputs", "outputs", "method_name"}


def _image_body(**extra: Any) -> dict[str, Any]:
    return {"instances": sample_models.random_images(1).tolist(), **extra}


# (method, path, body, status, error message): TF Serving's REST answers for the error table.
REST_ERRORS: dict[str, tuple[str, str, Any, int, str]] = {
    "unknown model": (
        "POST",
        "/v1/models/nope:predict",
        _image_body(),
        404,
        "Servable not found for request: Latest(nope)",
    ),
    "unknown version": (
        "POST",
        "/v1/models/tiny/versions/9:predict",
        _image_body(),
        404,
        "Servable not found for request: Specific(tiny, 9)",
    ),
    "unknown label": (
        "POST",
        "/v1/models/tiny/labels/beta:predict",
        _image_body(),
        400,
        "Unrecognized servable version label: beta",
    ),
    "unknown signature": (
        "POST",
        "/v1/models/tiny:predict",
        _image_body(signature_name="x"),
        400,
        'Serving signature name: "x" not found in signature def',
    ),
    "missing instances/inputs": (
        "POST",
        "/v1/models/tiny:predict",
        {"signature_name": ""},
        400,
        "Missing 'inputs' or 'instances' key",
    ),
    "both instances and inputs": (
        "POST",
        "/v1/models/two:predict",
        {"instances": [1], "inputs": [1]},
        400,
        'JSON Value: {"instances":[1],"inputs":[1]} Not formatted correctly '
        "expecting only one of 'inputs' or 'instances' keys to exist ",
    ),
    "wrong number of inputs": (
        "POST",
        "/v1/models/two:predict",
        {"instances": [{"a": [1, 2, 3]}]},
        400,
        "Failed to process element: 0 of 'instances' list. JSON object: "
        '{"a":[1,2,3]} must only have keys: a,b',
    ),
    "wrong input name": (
        "POST",
        "/v1/models/two:predict",
        {"instances": [{"a": [1, 2, 3], "c": 1}]},
        400,
        "Failed to process element: 0 key: c of 'instances' list. Error: "
        "INVALID_ARGUMENT: JSON object: does not have named input: c",
    ),
    "missing named input": (
        "POST",
        "/v1/models/two:predict",
        {"inputs": {"a": [[1, 2, 3]]}},
        400,
        "Missing named input: b in 'inputs' object.",
    ),
    "wrong dtype": (
        "POST",
        "/v1/models/two:predict",
        {"inputs": {"a": [["x", 2, 3]], "b": [1]}},
        400,
        'JSON Value: "x" Type: String is not of expected type: float',
    ),
    "float for an int input": (
        "POST",
        "/v1/models/two:predict",
        {"inputs": {"a": [[1, 2, 3]], "b": [4.5]}},
        400,
        "JSON Value: 4.5 Type: Number is not of expected type: int64",
    ),
    "ragged list": (
        "POST",
        "/v1/models/two:predict",
        {"inputs": {"a": [[1, 2, 3], [1]], "b": [1, 2]}},
        400,
        "Encountered list at unexpected size: 1 at level: 1 expected size: 3",
    ),
    "wrong rank": (
        "POST",
        "/v1/models/tiny:predict",
        {"inputs": sample_models.random_images(1)[0].tolist()},
        400,
        f"input tensor {COURSE_INPUT_NAME} has shape [299,299,3], but the model's input takes [-1,299,299,3] "
        "(-1 = any size)",
    ),
    "not JSON": (
        "POST",
        "/v1/models/tiny:predict",
        "{",
        400,
        "JSON Parse error: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
    ),
    "empty body": ("POST", "/v1/models/tiny:predict", "", 400, "JSON Parse error: The document is empty"),
    "status of unknown model": (
        "GET",
        "/v1/models/nope",
        None,
        404,
        "Could not find any versions of model nope",
    ),
    "status of unknown version": (
        "GET",
        "/v1/models/tiny/versions/7",
        None,
        404,
        "Could not find version 7 of model tiny",
    ),
    "metadata of unknown model": (
        "GET",
        "/v1/models/nope/metadata",
        None,
        404,
        "Servable not found for request: Latest(nope)",
    ),
    "no model name": ("GET", "/v1/models", None, 400, "Missing model name in request."),
    "unknown path": ("GET", "/v2/health", None, 400, "Malformed request: GET /v2/health"),
    "classify on a model without classify signatures": (
        "POST",
        "/v1/models/tiny:classify",
        {"examples": [{"x": 1.0}]},
        400,
        "No classification inputs found in SignatureDef: ",
    ),
    "body above the limit": (
        "POST",
        "/v1/models/tiny:predict",
        "x" * 30_000_001,
        413,
        "Request body of 30000001 bytes is larger than the limit of 30000000 bytes",
    ),
}


@pytest.mark.parametrize("case", list(REST_ERRORS))
def test_rest_errors_have_tf_servings_status_and_message(rest: httpx.Client, case: str) -> None:
    method, path, body, status, message = REST_ERRORS[case]
    content = body if isinstance(body, str) else None if body is None else json.dumps(body)
    response = rest.request(method, path, content=content)
    assert response.status_code == status, response.text
    # TF Serving quotes the SignatureDef after some messages; that part is not compared.
    error = response.json()["error"]
    assert error == message or (message.endswith(": ") and error.startswith(message)), error


# Issue 17: inputs of any size or depth get a 400 with a JSON error, never a 500 or a hang.
HOSTILE_BODIES: dict[str, tuple[str, str, str]] = {
    "JSON nested 100,000 deep": (
        "/v1/models/tiny:predict",
        '{"instances":' + "[" * 100_000 + "]" * 100_000 + "}",
        "JSON Parse error: maximum recursion depth exceeded",
    ),
    "JSON nested 900 deep (parses; the rank is checked before anything is built)": (
        "/v1/models/tiny:predict",
        '{"inputs":' + "[" * 900 + "0" + "]" * 900 + "}",
        f"input tensor {COURSE_INPUT_NAME} has shape ["
        + ",".join(["1"] * 900)
        + "], but the model's input takes",
    ),
    "an integer of 5,000 digits": (
        "/v1/models/two:predict",
        '{"inputs": {"a": [[1, 2, 3]], "b": [' + "9" * 5000 + "]}}",
        "JSON Parse error: Exceeds the limit (4300 digits) for integer string conversion",
    ),
    "an integer beyond int64": (
        "/v1/models/two:predict",
        '{"inputs": {"a": [[1, 2, 3]], "b": [' + "9" * 40 + "]}}",
        "JSON Value: " + "9" * 40 + " Type: Number is not of expected type: int64",
    ),
    "a number beyond float32": (
        "/v1/models/two:predict",
        '{"inputs": {"a": [[1e300, 2, 3]], "b": [1]}}',
        "Cannot convert JSON value: 1e+300 to float without loss of precision.",
    ),
    "200,000 rows with a string last (was quadratic to find)": (
        "/v1/models/two:predict",
        json.dumps({"inputs": {"a": [[0, 0, 0]] * 200_000 + [["x", 0, 0]], "b": [0] * 200_001}}),
        'JSON Value: "x" Type: String is not of expected type: float',
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE_BODIES))
def test_hostile_bodies_are_400_promptly(rest: httpx.Client, case: str) -> None:
    import time

    path, body, message = HOSTILE_BODIES[case]
    started = time.monotonic()
    response = rest.post(path, content=body)
    assert time.monotonic() - started < 10
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(message)
