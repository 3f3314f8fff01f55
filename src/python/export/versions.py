"""Version directories under `<base>/<model name>/`, and writing one atomically.

TF Serving polls the model directory and loads any numeric subdirectory it finds, so a version
must never be visible half-written: it is built in a hidden sibling directory (same filesystem,
non-numeric name, which TF Serving ignores) and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from export.errors import BadOption, ExportWriteError, VersionExists

STAGING_PREFIX = ".export-"


def existing_versions(model_dir: Path) -> list[int]:
    """The numeric version directories TF Serving would consider, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_dir: Path) -> int:
    """The highest existing version + 1 (1 for a new model)."""
    versions = existing_versions(model_dir)
    return versions[-1] + 1 if versions else 1


@contextmanager
def staged_version(model_dir: Path, version: int, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory; on success it becomes `model_dir/version`.

    On any failure (or Ctrl-C) the staging directory is removed and `model_dir/version` is left as
    it was. With `overwrite`, an existing version is replaced (moved aside, then deleted).
    """
    if version < 1:
        raise BadOption(f"version must be a positive integer, not {version}")
    target = model_dir / str(version)
    if target.exists() and not overwrite:
        raise VersionExists(f"{target} exists; choose another version or overwrite it (--overwrite)")
    # A model directory this export creates is removed again if the export fails: TF Serving
    # pointed at an empty model directory reports "no versions" instead of "not found".
    created = not model_dir.exists()
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{version}-", dir=model_dir))
        # mkdtemp makes the directory private (0700); a TF Serving container running as another
        # user must be able to read the version, as it can read files the export writes.
        staging.chmod(0o755)
    except OSError as e:
        raise ExportWriteError(f"cannot create a directory in {model_dir}: {e.strerror}") from None
    committed = False
    try:
        yield staging
        _sync_tree(staging)
        _move_into_place(staging, target, overwrite)
        committed = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not committed:
            with contextlib.suppress(OSError):
                model_dir.rmdir()  # only if empty


def _move_into_place(staging: Path, target: Path, overwrite: bool) -> None:
    old: Path | None = None
    try:
        if target.exists():
            if not overwrite:
                raise VersionExists(f"{target} appeared while exporting; nothing was written")
            old = target.with_name(f"{STAGING_PREFIX}old-{target.name}-{os.getpid()}")
            os.rename(target, old)
        os.rename(staging, target)
    except OSError as e:
        if old is not None and not target.exists():
            os.rename(old, target)  # put the previous version back
        raise ExportWriteError(f"cannot move the export into {target}: {e.strerror}") from None
    _sync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _sync_tree(root: Path) -> None:
    """fsync every file and directory, so a crash after the rename cannot leave empty files."""
    try:
        for dirpath, _dirnames, filenames in os.walk(root):
            for name in filenames:
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            _sync_dir(Path(dirpath))
    except OSError as e:
        raise ExportWriteError(f"cannot flush the export to disk: {e.strerror}") from None


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
