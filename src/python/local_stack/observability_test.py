"""The local stack's --prediction-log and --monitoring, as a user runs them: `python -m local_stack`
with both flags, a few images classified, then the log's lines, its report, and the metrics the
bundled Prometheus rules and dashboard read, from both the gateway and the model server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from clothing_settings import SettingError
from local_stack.settings import parse_settings
from testing_support.image_host import image_bytes
from testing_support.ports import free_port
from testing_support.processes import child_environment
from testing_support.stack import wait_for
from testing_support.stack_program import StackProcess

IMAGES = [image_bytes("JPEG", (320, 240), (200, 30, 60)), image_bytes("PNG", (100, 150), (20, 40, 220))]


def metric(text: str, series: str) -> float:
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == series:
            return float(value)
    raise AssertionError(f"no {series} in:\n{text[:3000]}")


def test_one_flag_each_writes_the_prediction_log_and_serves_the_metrics(tmp_path: Path) -> None:
    port, grpc_port, rest_port = free_port(), free_port(), free_port()
    log = tmp_path / "predictions.jsonl"
    stack = StackProcess(
        [f"--port={port}", f"--grpc-port={grpc_port}", f"--rest-port={rest_port}",
         f"--cache-dir={tmp_path / 'cache'}", f"--prediction-log={log}", "--monitoring"]
    )  # fmt: skip
    try:
        stack.wait_for("ready in", 600)
        said = stack.text()
        assert f"prediction log: {log}" in said
        assert f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics" in said
        assert (tmp_path / "cache" / "monitoring.config").is_file()

        gateway = f"http://127.0.0.1:{port}"
        ids = []
        with httpx.Client(timeout=60) as client:
            for image in IMAGES:
                r = client.post(f"{gateway}/v1/classify", content=image, headers={"content-type": "image/*"})
                assert r.status_code == 200, r.text
                ids.append(r.headers["x-request-id"])
            files = [("image", (f"{i}.img", image, "image/*")) for i, image in enumerate(IMAGES)]
            r = client.post(f"{gateway}/v1/classify/batch", files=files)
            assert r.status_code == 200, r.text
            ids.append(r.headers["x-request-id"])

        # The prediction log: one line per image, the demo model's version and signature.
        assert wait_for(lambda: log.exists() and log.read_text().count("\n") == 4, 10)
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        assert [line["request_id"] for line in lines] == [ids[0], ids[1], ids[2], ids[2]]
        models = {tuple(line["model"].values()) for line in lines}
        assert models == {("clothing-model", 1, "pixels")}
        assert [(line["image"]["width"], line["image"]["height"]) for line in lines] == [
            (320, 240), (100, 150), (320, 240), (100, 150),
        ]  # fmt: skip
        assert [line["image"]["source"] for line in lines] == ["raw", "raw", "upload", "upload"]
        report = subprocess.run(
            [sys.executable, "-m", "prediction_report", str(log)],
            env=child_environment({}), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert report.returncode == 0, report.stderr
        assert report.stdout.startswith("clothing-model version 1: 3 requests, 4 images;")

        # TF Serving's metrics from the model server, under TF Serving's names: 3 Predict calls.
        served = httpx.get(f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics").text
        count = ':tensorflow:serving:request_count{model_name="clothing-model",status="OK"}'
        latency = (
            ':tensorflow:serving:request_latency_count{model_name="clothing-model",API="Predict",'
            'entrypoint="GRPC"}'
        )
        assert metric(served, count) >= 3
        assert metric(served, latency) >= 3
        # The gateway's, labelled with the version that answered.
        own = httpx.get(f"{gateway}/metrics").text
        assert metric(own, 'gateway_requests_total{model_version="1",route="/v1/classify",status="200"}') == 2
        assert metric(own, "gateway_prediction_log_lines_total") == 4
        assert metric(own, "gateway_model_ready") == 1
        # The stack asks /readyz every 5 s (the model-ready gauge stays current).
        readyz = 'gateway_requests_total{model_version="",route="/readyz",status="200"}'
        before = metric(own, readyz)
        assert wait_for(lambda: metric(httpx.get(f"{gateway}/metrics").text, readyz) > before, 15, 0.5)
    finally:
        code = stack.stop()
    assert code == 0, stack.text()[-4000:]
    assert re.search(r"stopped\n?$", stack.text())


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["--monitoring", "--tf-serving", "localhost:8500"],
            "--monitoring configures the local model server; an existing TF Serving (--tf-serving) takes "
            "its own --monitoring_config_file",
        ),
        (
            ["--monitoring", "--rest-port", "0"],
            "--monitoring serves the metrics on the REST port; --rest-port is 0",
        ),
        (["--monitoring=yes"], "argument --monitoring: ignored explicit argument 'yes'"),
    ],
)
def test_flags_that_cannot_work_together_are_one_line(argv: list[str], line: str) -> None:
    with pytest.raises(SettingError) as caught:
        parse_settings(argv, {})
    assert str(caught.value) == line


def test_the_flags_and_their_variable() -> None:
    s = parse_settings([], {})
    assert (s.prediction_log, s.monitoring) == (None, False)
    s = parse_settings(["--monitoring", "--prediction-log", "-"], {})
    assert (s.prediction_log, s.monitoring) == ("-", True)
    s = parse_settings([], {"CLOTHING_PREDICTION_LOG": "relative/p.jsonl"})
    assert s.prediction_log == str(Path.cwd() / "relative" / "p.jsonl")
