"""The export tool's errors: one tree, each a message for the person running the export.

    ExportError                 anything the export refuses or fails at (the CLI prints it as one line)
    ├── ModelFileError          the model file is missing, unreadable, or holds no model
    ├── UnsupportedModel        it loads, but cannot be served as an image classifier (its input is
    │                           not an image batch, several inputs, an unknown or unsupported layer)
    ├── BadOption               an option that does not fit the model (labels count, image size,
    │                           warmup images that are not images)
    ├── VersionExists           the version directory exists and overwriting was not asked for
    ├── ExportWriteError        the model directory cannot be written (disk full, not a directory)
    └── VerificationFailed      the export does not load or run the way TF Serving loads and runs it,
                                or its outputs differ from the source model's

Nothing here knows about the command line: `export.cli` turns any `ExportError` into one line on
stderr and a non-zero exit.
"""

from __future__ import annotations


class ExportError(Exception):
    """Base class of every error the export tool raises on purpose."""


class ModelFileError(ExportError):
    """The model file is missing, unreadable, or not a model."""


class UnsupportedModel(ExportError):
    """The model loads but cannot be served as an image classifier."""


class BadOption(ExportError):
    """An export option does not fit the model or cannot be used."""


class VersionExists(ExportError):
    """The target version directory exists and overwriting was not asked for."""


class ExportWriteError(ExportError):
    """Writing the model directory failed."""


class VerificationFailed(ExportError):
    """The export does not load or answer like the source model when loaded as TF Serving does."""


def one_line(error: BaseException, limit: int = 300) -> str:
    """The telling line of a third-party error's message (TensorFlow's run to pages), bounded.

    TensorFlow's graph errors start with "Graph execution error:" and a "Detected at node" stack;
    the cause is the first line after them that is neither indented nor a `[[node]]` marker.
    """
    lines = [line for line in str(error).splitlines() if line.strip()]
    telling = [
        line.strip()
        for line in lines
        if not line[0].isspace()
        and not line.startswith(("Graph execution error", "Detected at node", "[["))
    ]
    line = (telling or [line.strip() for line in lines] or [type(error).__name__])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."
