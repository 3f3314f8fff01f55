"""The prediction log as a user of the gateway sees it: the lines a real gateway writes for each
input form, sampling, the settings' errors, and what happens when the file is slow or full."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_keys.key_file import KeyEntry, digest_of
from clothing_preproc import CLOTHING_LABELS
from clothing_settings import SettingError
from gateway import create_app, parse_settings
from gateway.main import main
from gateway.metrics import Metrics
from gateway.prediction_log import SCHEMA_VERSION, TOP_K, PredictionLogger
from gateway.settings import PredictionLog
from testing_support.image_host import ImageHost, Reply, image_bytes
from testing_support.in_process_gateway import RunningGateway, resolver_from
from testing_support.pixel_means_serving import pixel_means_serving
from testing_support.processes import child_environment
from testing_support.stack import start_gateway, wait_for

RunGateway = Callable[..., RunningGateway]
RED = image_bytes("JPEG", (640, 480), (200, 30, 60))
BLUE = image_bytes("PNG", (300, 500), (20, 40, 220))
GREEN = image_bytes("WEBP", (120, 90), (30, 200, 60))
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture(scope="module")
def tf_serving() -> Iterator[str]:
    with pixel_means_serving(version=7) as address:
        yield address


def start(run_gateway: RunGateway, tf_serving: str, **env: str) -> RunningGateway:
    settings = parse_settings(
        [], {"TF_SERVING_HOST": tf_serving, "GATEWAY_FETCH_ALLOW_NETWORKS": "127.0.0.0/8", **env}
    )
    # The image host is reached by name; the log must say the name, not the address.
    return run_gateway(settings, resolver_from({"images.example": ["127.0.0.1"]}))


def lines_of(path: Path, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The log's lines once `count` are written (the writer thread is a moment behind the answer)."""
    assert wait_for(lambda: path.read_text(encoding="utf-8").count("\n") >= count, timeout)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), "a line is cut"
    return [json.loads(line) for line in text.splitlines()]


def classify_raw(gateway: RunningGateway) -> int:
    """The status of one image sent as the request body."""
    r = httpx.post(f"{gateway.url}/v1/classify", content=RED, headers={"content-type": "image/jpeg"})
    return r.status_code


def metric(gateway: RunningGateway, series: str) -> float:
    """One series' value on the gateway's /metrics, e.g. `name{label="value"}`."""
    for line in httpx.get(f"{gateway.url}/metrics").text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == series:
            return float(value)
    raise AssertionError(f"no {series} on /metrics")


def test_every_input_form_gets_its_lines(
    run_gateway: RunGateway, tf_serving: str, tmp_path: Path, image_host: ImageHost
) -> None:
    log = tmp_path / "predictions.jsonl"
    gateway = start(run_gateway, tf_serving, GATEWAY_PREDICTION_LOG=str(log))
    image_host.routes["/shirt.jpg?token=secret"] = Reply(body=RED)
    url = image_host.url("/shirt.jpg?token=secret", host="images.example")
    answers = [
        httpx.post(f"{gateway.url}/predict", json={"url": url}, headers={"X-Request-ID": "req-url"}),
        httpx.post(f"{gateway.url}/v1/classify", files={"image": ("b.png", BLUE, "image/png")}),
        httpx.post(f"{gateway.url}/v1/classify", content=GREEN, headers={"content-type": "image/webp"}),
        httpx.post(f"{gateway.url}/v1/classify", json={"b64": base64.b64encode(RED).decode()}),
        # A batch: the undecodable image has no prediction, so no line; the others keep their index.
        httpx.post(
            f"{gateway.url}/v1/classify/batch",
            json={"images": [{"b64": base64.b64encode(BLUE).decode()}, {"b64": "bm90IGFuIGltYWdl"},
                             {"url": url}]},
        ),
    ]  # fmt: skip
    assert [a.status_code for a in answers] == [200] * 5
    lines = lines_of(log, 6)
    assert len(lines) == 6

    first = lines[0]
    assert first["schema_version"] == SCHEMA_VERSION
    assert TIME.fullmatch(first["time"])
    assert first["request_id"] == "req-url" == answers[0].headers["x-request-id"]
    assert first["route"] == "/predict"
    assert first["model"] == {"name": "clothing-model", "version": 7, "signature": "serving_default"}
    assert first["api_key_id"] is None  # keys are off
    assert first["image"] == {
        "index": 0, "count": 1, "source": "url", "host": "images.example",
        "sha256": hashlib.sha256(RED).hexdigest(), "bytes": len(RED), "width": 640, "height": 480,
    }  # fmt: skip
    assert "secret" not in json.dumps(lines)  # the URL itself is not logged
    # The top classes as the answer gives them: labels and softmax probabilities, best first.
    answer = answers[0].json()
    best = sorted(answer, key=answer.get, reverse=True)[:TOP_K]
    assert [t["label"] for t in first["top"]] == best
    assert all(t["label"] in CLOTHING_LABELS and 0 < t["probability"] < 1 for t in first["top"])
    assert set(first["timings_ms"]) == {"fetch", "queue", "decode", "preprocess", "predict", "total"}
    assert first["timings_ms"]["fetch"] > 0
    assert first["timings_ms"]["total"] >= first["timings_ms"]["predict"] > 0
    assert (first["decode"]["family"], first["decode"]["size"]) == ("xception", [299, 299])

    upload, raw, b64 = lines[1], lines[2], lines[3]
    assert upload["route"] == "/v1/classify"
    assert (upload["image"]["source"], upload["image"]["host"]) == ("upload", None)
    assert (upload["image"]["width"], upload["image"]["height"]) == (300, 500)
    assert upload["top"] == [
        {"label": t["label"], "probability": t["probability"]} for t in answers[1].json()["top"][:TOP_K]
    ]
    assert (raw["image"]["source"], raw["image"]["sha256"]) == ("raw", hashlib.sha256(GREEN).hexdigest())
    assert (b64["image"]["source"], b64["image"]["bytes"]) == ("base64", len(RED))

    batch = lines[4:]
    assert [b["route"] for b in batch] == ["/v1/classify/batch"] * 2
    assert [(b["image"]["index"], b["image"]["count"], b["image"]["source"]) for b in batch] == [
        (0, 3, "base64"), (2, 3, "url"),
    ]  # fmt: skip
    assert batch[0]["request_id"] == batch[1]["request_id"] == answers[4].headers["x-request-id"]
    assert metric(gateway, "gateway_prediction_log_lines_total") == 6


def test_the_api_key_id_is_logged_never_the_key(
    run_gateway: RunGateway, tf_serving: str, tmp_path: Path
) -> None:
    key = "shop-key-c2VjcmV0IGtleQ"
    keys = tmp_path / "keys.txt"
    keys.write_text(KeyEntry("shop-frontend", digest_of(key)).line() + "\n")
    log = tmp_path / "predictions.jsonl"
    gateway = start(run_gateway, tf_serving, GATEWAY_PREDICTION_LOG=str(log), GATEWAY_API_KEYS_FILE=str(keys))
    headers = {"content-type": "image/jpeg", "X-API-Key": key}
    assert httpx.post(f"{gateway.url}/v1/classify", content=RED, headers=headers).status_code == 200
    assert classify_raw(gateway) == 401  # no key: refused, so not logged
    gateway.stop()
    (line,) = lines_of(log, 1)
    assert line["api_key_id"] == "shop-frontend"
    assert key not in log.read_text()


def test_full_urls_only_when_asked(
    run_gateway: RunGateway, tf_serving: str, tmp_path: Path, image_host: ImageHost
) -> None:
    log = tmp_path / "predictions.jsonl"
    gateway = start(
        run_gateway, tf_serving, GATEWAY_PREDICTION_LOG=str(log), GATEWAY_PREDICTION_LOG_FULL_URL="true"
    )
    image_host.routes["/a.jpg?sig=abc"] = Reply(body=RED)
    url = image_host.url("/a.jpg?sig=abc", host="images.example")
    assert httpx.post(f"{gateway.url}/predict", json={"url": url}).status_code == 200
    (line,) = lines_of(log, 1)
    assert line["image"]["url"] == url
    assert line["image"]["host"] == "images.example"


def test_the_file_is_appended_to_and_lines_survive_a_restart(
    run_gateway: RunGateway, tf_serving: str, tmp_path: Path
) -> None:
    log = tmp_path / "predictions.jsonl"
    log.write_text('{"earlier": "line"}\n')
    gateway = start(run_gateway, tf_serving, GATEWAY_PREDICTION_LOG=str(log))
    assert classify_raw(gateway) == 200
    gateway.stop()  # the app's shutdown writes what is queued
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0] == {"earlier": "line"}
    assert len(lines) == 2
    assert lines[1]["image"]["bytes"] == len(RED)


def test_sampling_logs_a_request_whole_or_not_at_all(
    run_gateway: RunGateway, tf_serving: str, tmp_path: Path
) -> None:
    log = tmp_path / "predictions.jsonl"
    gateway = start(
        run_gateway, tf_serving, GATEWAY_PREDICTION_LOG=str(log), GATEWAY_PREDICTION_LOG_SAMPLE="0.5"
    )
    batch = {"images": [{"b64": base64.b64encode(image).decode()} for image in (RED, BLUE, GREEN)]}
    ids = []
    with httpx.Client() as client:
        for _ in range(60):
            r = client.post(f"{gateway.url}/v1/classify/batch", json=batch)
            assert r.status_code == 200
            ids.append(r.headers["x-request-id"])
    gateway.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    per_request: dict[str, int] = {}
    for line in lines:
        per_request[line["request_id"]] = per_request.get(line["request_id"], 0) + 1
    assert set(per_request.values()) == {3}, "a sampled batch is logged whole"
    assert set(per_request) <= set(ids)
    # 60 requests at 0.5: 30 expected; outside 12..48 is a chance below one in 10^5.
    assert 12 <= len(per_request) <= 48, len(per_request)


def test_sample_zero_logs_nothing(run_gateway: RunGateway, tf_serving: str, tmp_path: Path) -> None:
    log = tmp_path / "predictions.jsonl"
    gateway = start(
        run_gateway, tf_serving, GATEWAY_PREDICTION_LOG=str(log), GATEWAY_PREDICTION_LOG_SAMPLE="0"
    )
    for _ in range(5):
        assert classify_raw(gateway) == 200
    gateway.stop()
    assert log.read_text() == ""


def test_concurrent_requests_write_whole_lines(
    run_gateway: RunGateway, tf_serving: str, tmp_path: Path
) -> None:
    log = tmp_path / "predictions.jsonl"
    gateway = start(run_gateway, tf_serving, GATEWAY_PREDICTION_LOG=str(log))
    batch = {"images": [{"b64": base64.b64encode(image).decode()} for image in (RED, BLUE, GREEN, RED)]}

    async def load() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            answers = await asyncio.gather(
                *(client.post(f"{gateway.url}/v1/classify/batch", json=batch) for _ in range(48))
            )
        return [a.status_code for a in answers]

    assert set(asyncio.run(load())) == {200}
    gateway.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines()]  # each parses: none is cut
    assert len(lines) == 48 * 4
    assert len({line["request_id"] for line in lines}) == 48


def test_a_full_disk_loses_lines_never_requests(run_gateway: RunGateway, tf_serving: str) -> None:
    # /dev/full refuses every write with ENOSPC, as a full disk does.
    gateway = start(run_gateway, tf_serving, GATEWAY_PREDICTION_LOG="/dev/full")
    for _ in range(3):
        assert classify_raw(gateway) == 200
    dropped = 'gateway_prediction_log_dropped_total{reason="write_error"}'
    assert wait_for(lambda: metric(gateway, dropped) == 3, 10), metric(gateway, dropped)
    assert metric(gateway, "gateway_prediction_log_lines_total") == 0


def test_a_stalled_writer_drops_lines_past_the_buffer_and_answers_on(
    run_gateway: RunGateway, tf_serving: str, tmp_path: Path
) -> None:
    # A FIFO nobody reads: the writer blocks once the pipe's buffer is full, like a hung disk.
    fifo = tmp_path / "stalled"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # lets the gateway open it for writing
    try:
        gateway = start(
            run_gateway, tf_serving, GATEWAY_PREDICTION_LOG=str(fifo), GATEWAY_PREDICTION_LOG_BUFFER="20"
        )
        batch = {"images": [{"b64": base64.b64encode(GREEN).decode()}] * 16}
        with httpx.Client(timeout=10) as client:
            for _ in range(40):  # 640 lines of ~700 bytes: far more than the pipe and the buffer hold
                assert client.post(f"{gateway.url}/v1/classify/batch", json=batch).status_code == 200
        dropped = metric(gateway, 'gateway_prediction_log_dropped_total{reason="buffer_full"}')
        assert dropped > 0

        # Reading unblocks the writer: it writes what it holds, in whole lines.
        text = bytearray()

        def drained() -> bool:
            done = metric(gateway, "gateway_prediction_log_lines_total") + dropped == 640
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(reader, 1 << 20):
                    text.extend(chunk)
            return done

        assert wait_for(drained, 20)
        lines = [json.loads(line) for line in text.decode().splitlines()]
        assert len(lines) == metric(gateway, "gateway_prediction_log_lines_total") >= 20
    finally:
        os.close(reader)


def test_a_partly_written_batch_is_cut_back_to_whole_lines(tmp_path: Path) -> None:
    # A file size limit (RLIMIT_FSIZE) makes the kernel take part of a write and refuse the rest,
    # as a disk that fills up mid-write does; in a child process, so no other file is limited.
    log = tmp_path / "predictions.jsonl"
    script = textwrap.dedent(
        """
        import resource, signal, sys
        from gateway.prediction_log import _FileSink
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        sink = _FileSink(sys.argv[1])
        sink.write(b"a" * 99 + b"\\n" * 1)
        sink.write((b"b" * 99 + b"\\n") * 4)
        try:
            sink.write((b"c" * 99 + b"\\n") * 8)
        except OSError as e:
            print(e.errno)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(log)],
        env=child_environment({}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "27"  # EFBIG
    assert log.read_bytes() == b"a" * 99 + b"\n" + (b"b" * 99 + b"\n") * 4


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_PREDICTION_LOG_SAMPLE", "1.5"),
        ("GATEWAY_PREDICTION_LOG_SAMPLE", "-0.1"),
        ("GATEWAY_PREDICTION_LOG_SAMPLE", "half"),
        ("GATEWAY_PREDICTION_LOG_SAMPLE", "nan"),
        ("GATEWAY_PREDICTION_LOG_FULL_URL", "yes please"),
        ("GATEWAY_PREDICTION_LOG_BUFFER", "0"),
        ("GATEWAY_PREDICTION_LOG_BUFFER", "many"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingError) as caught:
        parse_settings([], {name: value})
    assert caught.value.setting == name
    assert name in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_settings_and_their_defaults() -> None:
    default = PredictionLog(destination="", sample=1.0, full_url=False, buffer=10_000)
    assert parse_settings([], {}).prediction_log == default
    given = parse_settings(
        [],
        {
            "GATEWAY_PREDICTION_LOG": "-",
            "GATEWAY_PREDICTION_LOG_SAMPLE": "0.25",
            "GATEWAY_PREDICTION_LOG_FULL_URL": "true",
            "GATEWAY_PREDICTION_LOG_BUFFER": "500",
        },
    ).prediction_log
    assert given == PredictionLog(destination="-", sample=0.25, full_url=True, buffer=500)
    assert PredictionLogger.open(parse_settings([], {}).prediction_log, Metrics()) is None  # off


def test_a_file_that_cannot_be_opened_stops_the_gateway_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-folder" / "predictions.jsonl"
    with pytest.raises(SettingError) as caught:
        create_app(parse_settings([], {"GATEWAY_PREDICTION_LOG": str(missing)}))
    assert caught.value.setting == "GATEWAY_PREDICTION_LOG"
    monkeypatch.setenv("GATEWAY_PREDICTION_LOG", str(missing))
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"gateway: GATEWAY_PREDICTION_LOG={missing}: cannot open it for appending: No such file or directory"
    )


def test_stdout_gets_the_lines(tmp_path: Path, tf_serving: str) -> None:
    # `-`: the gateway's standard output, beside uvicorn's access log (a real `python -m gateway`).
    gateway = start_gateway(
        tf_serving, tmp_path, {"GATEWAY_PREDICTION_LOG": "-", "GATEWAY_LOG_LEVEL": "info"}
    )
    try:
        r = httpx.post(f"{gateway.url}/v1/classify", content=RED, headers={"content-type": "image/jpeg"})
        assert r.status_code == 200
    finally:
        gateway.process.stop()
    out = (tmp_path / f"gateway-{gateway.port}.log").read_text()
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [rec["request_id"] for rec in records] == [r.headers["x-request-id"]]
