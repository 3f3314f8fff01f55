"""Programs that import TensorFlow, run as a user runs them: stderr without TF's start-up noise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clothing_preproc.signature import COURSE_MODEL_NAME

# What TensorFlow 2.x writes on a machine without a GPU, in every program, before it does anything.
NOISE = ("absl::InitializeLog", "failed call to cuInit", "oneDNN custom operations", "Could not find cuda")


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.update(extra)
    return env


def _python(code: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], env=_environment(**extra), capture_output=True, text=True, timeout=120
    )


_IMPORT_AND_LOG_AN_ERROR = """
from tensorflow_noise import import_tensorflow_quietly
import_tensorflow_quietly()
import tensorflow as tf
print((tf.zeros(2) + 1).numpy().tolist())
tf.raw_ops.PrintV2(input=tf.constant("a real TensorFlow error"), output_stream="log(error)")
tf.raw_ops.PrintV2(input=tf.constant("a TensorFlow warning"), output_stream="log(warning)")
"""


def test_tensorflow_starts_without_its_noise_and_its_errors_still_show() -> None:
    result = _python(_IMPORT_AND_LOG_AN_ERROR)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[1.0, 1.0]\n"
    for noise in NOISE:
        assert noise not in result.stderr
    # TensorFlow's C++ errors after start-up reach stderr; its warnings stay below level 2.
    assert "a real TensorFlow error" in result.stderr
    assert "a TensorFlow warning" not in result.stderr


def test_a_user_who_sets_a_verbose_level_gets_everything() -> None:
    result = _python(_IMPORT_AND_LOG_AN_ERROR, TF_CPP_MIN_LOG_LEVEL="0")
    assert result.returncode == 0, result.stderr
    assert "absl::InitializeLog" in result.stderr
    assert "a TensorFlow warning" in result.stderr


def test_an_error_while_tensorflow_loads_is_shown() -> None:
    # A broken installation: the import fails, and what it said is not swallowed with the noise.
    broken = "import sys; sys.modules['tensorflow'] = None\n"
    result = _python(broken + "import tensorflow_noise; tensorflow_noise.import_tensorflow_quietly()")
    assert result.returncode == 1
    assert "ModuleNotFoundError: import of tensorflow halted" in result.stderr


def test_the_model_server_starts_without_tensorflows_noise(tmp_path: Path) -> None:
    args = ["--bind_address", "127.0.0.1", "--port", "0", "--rest_api_port", "0"]
    args += ["--model_name", "m", "--model_base_path", str(tmp_path)]
    server = subprocess.Popen(
        [sys.executable, "-m", "model_server", *args],
        env=_environment(),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while not any("model_server listening" in line for line in lines):
            if time.monotonic() > deadline:
                pytest.fail("the model server did not start:\n" + "".join(lines))
            line = server.stderr.readline()
            if not line:
                pytest.fail("the model server exited:\n" + "".join(lines))
            lines.append(line)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            _, rest = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            _, rest = server.communicate()
            pytest.fail("the model server did not stop on SIGTERM:\n" + "".join(lines) + rest)
    stderr = "".join(lines) + rest
    assert server.returncode == 0, stderr
    for noise in NOISE:
        assert noise not in stderr


def test_the_export_tool_writes_its_progress_without_tensorflows_noise(tmp_path: Path) -> None:
    code = "import sys; from export.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "demo", "--base", str(tmp_path), "--no-verify"],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / COURSE_MODEL_NAME / "1" / "saved_model.pb").exists()
    for noise in NOISE:
        assert noise not in result.stderr
