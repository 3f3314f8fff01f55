"""Version directories: numbering and the all-or-nothing write."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from export.errors import ExportWriteError, VersionExists
from export.versions import existing_versions, next_version, staged_version


def test_only_numeric_directories_are_versions(tmp_path: Path) -> None:
    for name in ("1", "7", "10", ".export-11-x", "latest"):
        (tmp_path / name).mkdir()
    (tmp_path / "12").write_text("a file, not a version")

    assert existing_versions(tmp_path) == [1, 7, 10]
    assert next_version(tmp_path) == 11
    assert next_version(tmp_path / "new-model") == 1


def test_a_staged_version_appears_whole_and_readable(tmp_path: Path) -> None:
    with staged_version(tmp_path, 3) as staging:
        (staging / "saved_model.pb").write_bytes(b"model")
        assert not (tmp_path / "3").exists()  # invisible to TF Serving until complete

    assert (tmp_path / "3" / "saved_model.pb").read_bytes() == b"model"
    assert stat.S_IMODE((tmp_path / "3").stat().st_mode) == 0o755
    assert [p.name for p in tmp_path.iterdir()] == ["3"]


def _interrupted_write(model_dir: Path) -> None:
    with staged_version(model_dir, 1) as staging:
        (staging / "saved_model.pb").write_bytes(b"half")
        raise KeyboardInterrupt  # Ctrl-C halfway through


def test_an_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        _interrupted_write(tmp_path)

    assert list(tmp_path.iterdir()) == []


def test_a_failed_first_export_leaves_no_model_directory(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), staged_version(tmp_path / "new-model", 1):
        raise RuntimeError("tracing failed")

    assert list(tmp_path.iterdir()) == []


def test_an_existing_version_is_kept_unless_overwritten(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "old").write_text("old")

    with pytest.raises(VersionExists, match="exists"), staged_version(tmp_path, 1):
        pass
    with staged_version(tmp_path, 1, overwrite=True) as staging:
        (staging / "new").write_text("new")

    assert [p.name for p in (tmp_path / "1").iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["1"]


def test_a_base_that_is_a_file_is_a_write_error(tmp_path: Path) -> None:
    base = tmp_path / "models"
    base.write_text("not a directory")

    with pytest.raises(ExportWriteError, match="cannot create"), staged_version(base / "m", 1):
        pass
