"""`api-keys` as a user runs it: its entry point in a child process, reading and writing real files."""

from __future__ import annotations

import subprocess
from pathlib import Path

from api_keys import key_file
from testing_support.processes import child_environment, python_module


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The program with `env` (default: this one's, without GATEWAY_API_KEYS_FILE)."""
    environment = child_environment(env)
    if env is None or "GATEWAY_API_KEYS_FILE" not in env:
        environment.pop("GATEWAY_API_KEYS_FILE", None)
    argv = python_module("api_keys.main", *args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=environment)


def test_new_prints_the_key_once_and_stores_only_its_digest(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    made = run("--file", str(keys), "new", "shop-frontend")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert made.stdout == f"{key}\n"
    assert key_file.is_key_shaped(key)
    assert "shown only now" in made.stderr
    stored = keys.read_text()
    assert key not in stored
    assert key_file.read(keys) == (key_file.KeyEntry("shop-frontend", key_file.digest_of(key)),)
    second = run("--file", str(keys), "new", "batch-job").stdout.strip()
    assert second != key
    assert [e.key_id for e in key_file.read(keys)] == ["shop-frontend", "batch-job"]
    assert stored.startswith("# ")  # a new file says what it is


def test_revoke_marks_one_line_and_keeps_the_rest(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# ours\n")
    run("--file", str(keys), "new", "a")
    run("--file", str(keys), "new", "b")
    keys.write_text(keys.read_text() + "# a note by hand\n")
    done = run("--file", str(keys), "revoke", "a")
    assert done.returncode == 0, done.stderr
    entries = {e.key_id: e.revoked for e in key_file.read(keys)}
    assert entries == {"a": True, "b": False}
    assert keys.read_text().startswith("# ours\n")
    assert keys.read_text().endswith("# a note by hand\n")
    listed = run("--file", str(keys), "list")
    assert listed.stdout == "a\trevoked\nb\tactive\n"


def test_the_file_can_come_from_the_gateways_variable(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    assert run("new", "env-user", env={"GATEWAY_API_KEYS_FILE": str(keys)}).returncode == 0
    assert [e.key_id for e in key_file.read(keys)] == ["env-user"]


def test_mistakes_are_one_line_and_non_zero(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    run("--file", str(keys), "new", "a")
    bad = tmp_path / "bad.txt"
    bad.write_text("a deadbeef\n")
    for args, words in (
        (("--file", str(keys), "new", "a"), "already has a key named 'a'"),
        (("--file", str(keys), "new", "no spaces"), "is not"),
        (("--file", str(keys), "revoke", "nobody"), "has no key named 'nobody'"),
        (("--file", str(tmp_path / "missing.txt"), "revoke", "a"), "does not exist"),
        (("--file", str(bad), "new", "b"), "line 1:"),
        (("--file", str(keys), "rotate", "a"), "invalid choice"),
    ):
        done = run(*args)
        assert done.returncode != 0, args
        assert done.stderr.startswith("api-keys: "), (args, done.stderr)
        assert words in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stdout == ""
    run("--file", str(keys), "revoke", "a")
    again = run("--file", str(keys), "revoke", "a")
    assert again.returncode == 1
    assert "already revoked" in again.stderr
    no_file = run("new", "x")
    assert no_file.returncode == 1
    assert "GATEWAY_API_KEYS_FILE" in no_file.stderr


def test_help_names_every_command() -> None:
    done = run("--help")
    assert done.returncode == 0
    for word in ("new", "revoke", "list", "GATEWAY_API_KEYS_FILE", "--file"):
        assert word in done.stdout
