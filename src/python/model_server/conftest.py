"""Fixtures: SavedModels written once per test process, and in-process servers on free ports."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from testing_support import sample_models  # noqa: E402 - after the TF log level is set


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`<store>/tiny/{1,2}` (different weights), `two/1`, `plain/1` (TF Serving cannot run it)."""
    store = tmp_path_factory.mktemp("models")
    sample_models.write_image_model(store / "tiny" / "1", seed=0)
    sample_models.write_image_model(store / "tiny" / "2", seed=1)
    sample_models.write_two_input_model(store / "two" / "1")
    sample_models.write_plain_saved_model(store / "plain" / "1")
    return store


@pytest.fixture()
def model_copy(model_store: Path, tmp_path: Path) -> Callable[[str, int, int], Path]:
    """Copy a stored version into a fresh base path under another version number."""

    def copy(model: str, version: int, as_version: int) -> Path:
        target = tmp_path / model / str(as_version)
        staging = tmp_path / f".{model}-{as_version}"
        shutil.copytree(model_store / model / str(version), staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)  # complete or absent, as an export should appear
        return target

    return copy


@pytest.fixture()
def start_server() -> Iterator[Callable[..., object]]:
    """Start in-process servers from command-line flags; all stopped after the test."""
    from model_server.server import ModelServer
    from model_server.settings import parse_settings

    started: list[ModelServer] = []

    def start(*flags: str, wait: bool = True) -> ModelServer:
        argv = ["--port", "0", "--bind_address", "127.0.0.1", "--drain_seconds", "5", *flags]
        server = ModelServer(parse_settings(argv, {}))
        started.append(server)
        server.start()
        if wait:
            assert server.wait_ready(120), "models did not become AVAILABLE"
        return server

    yield start
    for server in started:
        server.stop(drain_seconds=2)
