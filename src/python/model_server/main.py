"""`model_server`: the command. Parses TF Serving's flags, serves until SIGTERM/SIGINT, then drains.

Exit status: 0 after a clean stop, 2 for unusable flags or config files, 1 if a port cannot be
bound. Log lines go to stderr; the line starting `model_server ready:` says that every model has
an AVAILABLE version and on which ports (useful with `--port 0`).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from clothing_settings import SettingError
from memory_reuse import keep_freed_memory
from model_server.settings import describe_ignored, parse_settings
from tensorflow_noise import import_tensorflow_quietly

log = logging.getLogger("model_server")


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except SettingError as e:
        print(f"model_server: error: {e}", file=sys.stderr)
        return 2
    _configure_logging()
    if settings.ignored_flags:
        log.warning("%s", describe_ignored(settings.ignored_flags))
    # Each request's input tensor (1 MB per 299×299 image) is allocated and freed several times
    # over; kept memory is reused instead of faulted in again (about 250 page faults per request).
    keep_freed_memory()
    # TensorFlow's start-up noise (INFO lines, a cuInit "error" on a machine without a GPU) would
    # bury the server's own lines; TF_CPP_MIN_LOG_LEVEL=0 or 1 asks for all of it.
    import_tensorflow_quietly()
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)  # the TF1 loader's deprecation notice, once per load

    from model_server.server import ModelServer

    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        # No I/O here: the signal can land while the main thread is inside a write to stderr,
        # and logging from the handler then raises "reentrant call" into that write.
        received.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server = ModelServer(settings)
    except OSError as e:
        log.error("%s", e)
        return 1
    server.start()
    while not stop.wait(1.0):  # a timed wait: the signal handler always gets to run promptly
        pass
    log.info("%s received: draining", signal.Signals(received[0]).name)
    server.stop()
    return 0
