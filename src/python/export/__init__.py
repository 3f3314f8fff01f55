"""export: a Keras model file -> a TF Serving model directory, verified the way TF Serving loads it.

Public API (imported lazily: TensorFlow loads on first use, so `--help` stays instant):

- `export_model`: Keras model (or `SourceModel`) -> `<base>/<name>/<version>/`, verified.
- `load_source`, `SourceModel`: read `.keras`, Keras 3 / Keras 2 `.h5` files and SavedModels.
- `build_demo_model`, `export_demo_model`: the seeded, untrained demo models and their export.
- `verify_export`, `verify_version`, `serving_session`: load an export as TF Serving does and check it.
- `show_signature`: the signature as `saved_model_cli show --all` prints it.
- `existing_versions`, `next_version`: the version directories of a model.
- The error tree rooted at `ExportError` (see `export.errors`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from export.errors import (
    BadOption,
    ExportError,
    ExportWriteError,
    ModelFileError,
    UnsupportedModel,
    VerificationFailed,
    VersionExists,
)

if TYPE_CHECKING:
    from export.demo import build_demo_model, export_demo_model
    from export.exporter import export_model, verify_version
    from export.show import show_signature
    from export.source import SourceModel, load_source
    from export.verify import serving_session, verify_export
    from export.versions import existing_versions, next_version

_LAZY = {
    "build_demo_model": "export.demo",
    "export_demo_model": "export.demo",
    "export_model": "export.exporter",
    "verify_version": "export.exporter",
    "show_signature": "export.show",
    "SourceModel": "export.source",
    "load_source": "export.source",
    "serving_session": "export.verify",
    "verify_export": "export.verify",
    "existing_versions": "export.versions",
    "next_version": "export.versions",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'export' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "BadOption",
    "ExportError",
    "ExportWriteError",
    "ModelFileError",
    "SourceModel",
    "UnsupportedModel",
    "VerificationFailed",
    "VersionExists",
    "build_demo_model",
    "existing_versions",
    "export_demo_model",
    "export_model",
    "load_source",
    "next_version",
    "serving_session",
    "show_signature",
    "verify_export",
    "verify_version",
]
