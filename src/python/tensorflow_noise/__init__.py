"""TensorFlow imported without its start-up noise.

On a machine without a GPU, importing TensorFlow writes a dozen lines to stderr that are not
the program's: absl's "All log messages before absl::InitializeLog() is called are written to
STDERR", informational notes (oneDNN, CUDA drivers not found, CPU instructions), and an error
line, "failed call to cuInit", that only says there is no GPU. `TF_CPP_MIN_LOG_LEVEL=2` hides
TensorFlow's own INFO and WARNING lines once it runs, but not what its libraries log while they
load, nor the cuInit line (an ERROR; level 3 would hide every real error with it).

`import_tensorflow_quietly` imports TensorFlow and probes its devices with stderr (file
descriptor 2, which C++ writes to) captured, then passes on every captured line but that noise;
the program's own `import tensorflow` afterwards finds it loaded. Later errors,
and TF's warnings and errors at level 2, reach stderr as always. A user who asks for TensorFlow's
logs, with `TF_CPP_MIN_LOG_LEVEL` 0 or 1, gets everything untouched.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

# Levels at which TensorFlow's own INFO (0) or WARNING (1) lines are wanted: nothing is filtered.
VERBOSE_LEVELS = ("0", "1")

_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} "  # absl's INFO and WARNING lines, logged before TF_CPP_MIN_LOG_LEVEL applies
    r"|To enable the following instructions: .* rebuild TensorFlow"  # the CPU note's second line
    r"|E\d{4} .*failed call to cuInit"  # no GPU: not an error on a machine without one
    r")"
)


def wants_tensorflow_logs() -> bool:
    """Whether the user asked for TensorFlow's INFO or WARNING lines (TF_CPP_MIN_LOG_LEVEL 0 or 1)."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL") in VERBOSE_LEVELS


def import_tensorflow_quietly() -> None:
    """Import TensorFlow, its start-up noise left out of stderr unless the user asked for it.

    Call it before anything imports TensorFlow; once TensorFlow is loaded it does nothing.
    """
    if wants_tensorflow_logs() or sys.modules.get("tensorflow") is not None:
        return
    # Read once, when TensorFlow loads; children started later inherit it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow

            # The CUDA probe (and its cuInit line) happens at the first device lookup.
            tensorflow.config.list_physical_devices()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not _NOISE.match(line)))
            sys.stderr.flush()
