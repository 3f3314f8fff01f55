"""The model server and the gateway on this machine, one command: `./pants stack` (the alias of
`./pants run src/python/local_stack:local_stack`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from clothing_settings import SettingError
from local_stack.errors import StackError
from local_stack.settings import parse_settings
from local_stack.stack import Stack


def say(message: str) -> None:
    print(f"[local-stack] {message}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except SystemExit as e:  # --help, already printed by argparse
        return int(e.code or 0)
    except SettingError as e:
        print(f"local-stack: error: {e}", file=sys.stderr)
        return 2
    stack = Stack(settings, say)
    stack.install_signal_handlers()
    try:
        stack.start()
        took = stack.wait_ready()
        if not stack.stopping.is_set():
            url = settings.url
            say(f"ready in {took:.1f} s: open {url}  (API: {url}/openapi.json; Ctrl-C stops)")
            for note in stack.observability():
                say(note)
            stack.run_until_stopped()
        return 0
    except StackError as e:
        print(f"local-stack: error: {e}", file=sys.stderr)
        return e.exit_code
    finally:
        stack.stop()
        say("stopped")
