"""`prediction-report` on logs a real gateway wrote: two model versions behind two gateways, their
answers known, the report's counts, frequencies and quantiles checked against those answers."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway import parse_settings
from testing_support.image_host import image_bytes
from testing_support.in_process_gateway import RunningGateway
from testing_support.pixel_means_serving import pixel_means_serving
from testing_support.processes import child_environment

# Colours the stand-in's logits tell apart: different top-1 classes.
COLOURS = [(200, 30, 60), (20, 40, 220), (30, 200, 60), (240, 240, 240), (10, 10, 10), (120, 60, 200)]


@dataclass(frozen=True)
class Logged:
    path: Path
    top1: list[tuple[str, float]]  # per image answered: the top class and its probability
    requests: int


def classify_into_log(version: int, path: Path, requests: list[list[bytes]]) -> Logged:
    """A gateway in front of a stand-in serving `version`, logging to `path`; each request is a
    batch of images. Returns what the answers said."""
    top1: list[tuple[str, float]] = []
    with pixel_means_serving(version) as address:
        gateway = RunningGateway(
            parse_settings([], {"TF_SERVING_HOST": address, "GATEWAY_PREDICTION_LOG": str(path)})
        )
        try:
            with httpx.Client(timeout=30) as client:
                for images in requests:
                    files = [("image", (f"{i}.png", image, "image/png")) for i, image in enumerate(images)]
                    r = client.post(f"{gateway.url}/v1/classify/batch", files=files)
                    assert r.status_code == 200, r.text
                    for result in r.json()["results"]:
                        best = result["top"][0]
                        top1.append((best["label"], best["probability"]))
        finally:
            gateway.stop()  # writes what is queued
    return Logged(path, top1, len(requests))


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Logged, Logged]:
    folder = tmp_path_factory.mktemp("logs")
    pictures = [image_bytes("PNG", (40 + 7 * i, 30 + 5 * i), c) for i, c in enumerate(COLOURS)]
    # Version 1: 5 requests of 1-3 images; version 2: 4 requests, the colours weighted differently.
    first = classify_into_log(
        1, folder / "v1.jsonl", [[pictures[0]], pictures[1:3], [pictures[3]] * 3, [pictures[4]], pictures[:2]]
    )
    second = classify_into_log(
        2, folder / "v2.jsonl", [[pictures[5]] * 2, [pictures[5]], pictures[2:6], [pictures[0]]]
    )
    return first, second


def report(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prediction_report", *args],
        env=child_environment({}),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def expected(logged: Logged) -> dict[str, Any]:
    by_class: dict[str, list[float]] = {}
    for label, p in logged.top1:
        by_class.setdefault(label, []).append(p)
    return {"images": len(logged.top1), "requests": logged.requests, "classes": by_class}


def test_the_json_report_holds_each_versions_answers(logs: tuple[Logged, Logged]) -> None:
    first, second = logs
    done = report("--format", "json", str(first.path), str(second.path))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["malformed"]["lines"] == 0
    versions = [(v["model"], v["version"]) for v in summary["versions"]]
    assert versions == [("clothing-model", 1), ("clothing-model", 2)]
    for got, logged in zip(summary["versions"], logs, strict=True):
        want = expected(logged)
        assert (got["requests"], got["images"]) == (want["requests"], want["images"])
        frequencies = Counter({label: len(ps) for label, ps in want["classes"].items()})
        assert {c["label"]: c["images"] for c in got["classes"]} == frequencies
        assert [c["images"] for c in got["classes"]] == sorted(frequencies.values(), reverse=True)
        for c in got["classes"]:
            values = want["classes"][c["label"]]
            assert c["mean"] == pytest.approx(statistics.fmean(values))
            assert c["share"] == pytest.approx(len(values) / want["images"])
            assert min(values) <= c["p10"] <= c["p50"] <= c["p90"] <= max(values)
        every = sorted(p for _, p in logged.top1)
        assert got["top1"]["mean"] == pytest.approx(statistics.fmean(every))
        assert got["top1"]["p50"] == pytest.approx(statistics.median(every))


def test_the_table_shows_one_block_per_version(logs: tuple[Logged, Logged]) -> None:
    first, second = logs
    done = report(str(first.path), str(second.path))
    assert done.returncode == 0, done.stderr
    blocks = done.stdout.strip().split("\n\n")
    assert len(blocks) == 2
    header = blocks[0].splitlines()[0]
    assert header.startswith(f"clothing-model version 1: 5 requests, {len(first.top1)} images; top-1 ")
    assert blocks[1].startswith(f"clothing-model version 2: 4 requests, {len(second.top1)} images")
    columns = ["top-1", "class", "images", "share", "mean", "p", "p10", "p50", "p90"]
    assert blocks[0].splitlines()[1].split() == columns
    most, count = Counter(label for label, _ in first.top1).most_common(1)[0]
    assert blocks[0].splitlines()[2].split()[:2] == [most, str(count)]


def test_malformed_lines_are_counted_and_named(logs: tuple[Logged, Logged], tmp_path: Path) -> None:
    first, _ = logs
    lines = first.path.read_text().splitlines()
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        "\n".join(
            [
                lines[0],
                # uvicorn's access log, which shares standard output with `GATEWAY_PREDICTION_LOG=-`
                'INFO:     [abc] 127.0.0.1:5000 - "POST /v1/classify HTTP/1.1" 200',
                lines[1],
                '{"schema_version": 1, "model": {"name": "clothing-model", "version": 1}}',  # no 'top'
                '{"schema_version": 99, "top": []}',
                lines[2][: len(lines[2]) // 2],  # a line cut short
                "[1, 2]",
            ]
        )
        + "\n"
    )
    done = report("--format", "json", str(mixed))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["lines"] == 7
    assert summary["malformed"]["lines"] == 5
    assert summary["malformed"]["reasons"] == {
        "not JSON": 2,
        "no 'top'": 1,
        "schema_version 99 is not one this reader knows (1)": 1,
        "not a JSON object": 1,
    }
    assert summary["malformed"]["examples"][0] == f"{mixed}:2: not JSON"
    assert summary["versions"][0]["images"] == 2
    text = report(str(mixed))
    assert "5 of 7 lines skipped, not prediction records: 2 not JSON;" in text.stdout
    assert "Traceback" not in text.stdout + text.stderr


def test_standard_input_is_read_without_files(logs: tuple[Logged, Logged]) -> None:
    first, _ = logs
    done = report("--format", "json", stdin=first.path.read_text())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["versions"][0]["images"] == len(first.top1)
    binary_junk = report(stdin="\x00\xff garbage\n")
    assert binary_junk.returncode == 0
    assert "no prediction records" in binary_junk.stdout


def test_a_missing_file_is_one_line_and_non_zero(logs: tuple[Logged, Logged], tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    done = report(str(logs[0].path), str(missing))
    assert done.returncode == 1
    assert done.stderr == f"prediction-report: cannot read {missing}: No such file or directory\n"
    assert done.stdout == ""


def test_a_bad_flag_is_one_line() -> None:
    done = report("--format", "csv")
    assert done.returncode == 2
    assert done.stderr == (
        "prediction-report: error: argument --format: invalid choice: 'csv' (choose from 'table', 'json')\n"
    )


def test_help() -> None:
    done = report("--help")
    assert done.returncode == 0
    assert "usage: prediction-report" in done.stdout
    assert "--format" in done.stdout
