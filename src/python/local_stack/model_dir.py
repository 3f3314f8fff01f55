"""The model the stack serves: a directory the user gives, or the demo model exported once."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from clothing_preproc.description import DESCRIPTION_FILE
from local_stack.children import Child, child_environment, describe_exit
from local_stack.errors import ChildFailed, ModelDirError


def check_model_dir(path: Path) -> list[int]:
    """The servable versions under `path` (TF Serving's --model_base_path), or a ModelDirError."""
    if not path.is_dir():
        raise ModelDirError(f"model directory {path} does not exist")
    if (path / "saved_model.pb").exists():
        raise ModelDirError(
            f"{path} is one version of a model; give the folder that holds the numbered versions "
            f"({path.parent})"
        )
    versions = sorted(
        int(p.name) for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()
    )
    if not versions:
        raise ModelDirError(
            f"{path} holds no model version (expected {path}/<version>/saved_model.pb, as export writes it)"
        )
    return versions


def newest_description(model_dir: Path) -> Path | None:
    """The description file export wrote beside the newest version (the one TF Serving serves by
    default), or None for a model export did not write."""
    versions = [p for p in model_dir.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()]
    if not versions:
        return None
    description = max(versions, key=lambda p: int(p.name)) / DESCRIPTION_FILE
    return description if description.is_file() else None


def ensure_demo_model(base: Path, name: str, say: Callable[[str], None]) -> Path:
    """`<base>/<name>`, exporting the tiny demo model there first if it is not there yet."""
    model_dir = base / name
    if model_dir.is_dir():
        try:
            check_model_dir(model_dir)
            return model_dir
        except ModelDirError:
            pass  # an interrupted earlier export: start again
    say(f"first run: exporting the tiny demo model (untrained) into {model_dir} … (about half a minute)")
    staging = base / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    start = time.monotonic()
    # A child process: the stack itself never imports TensorFlow (it only supervises).
    export = Child(
        "export",
        "export.cli",
        ["demo", "--base", str(staging), "--kind", "tiny", "--name", name],
        child_environment({}),
    )
    try:
        code = export.wait()
    except BaseException:
        export.stop(5)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if code != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise ChildFailed(
            f"exporting the demo model failed ({describe_exit(code or 0)}); its output is above"
        )
    shutil.rmtree(model_dir, ignore_errors=True)
    (staging / name).rename(model_dir)
    shutil.rmtree(staging, ignore_errors=True)
    say(f"demo model exported in {time.monotonic() - start:.0f} s")
    return model_dir
