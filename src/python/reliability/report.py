"""Figures a system test measured, printed and optionally collected for docs/reliability.md.

Each test calls `record(name, figures)`: one line `RELIABILITY <name> <json>` on stdout (shown by
`./pants test … --output=all`) and, when `RELIABILITY_REPORT` names a file (an absolute path: tests
run in a sandbox), the same JSON appended to it as one line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping


def record(name: str, figures: Mapping[str, object]) -> None:
    line = json.dumps({"test": name, **figures}, ensure_ascii=False, default=str)
    print(f"RELIABILITY {name} {line}", flush=True)
    path = os.environ.get("RELIABILITY_REPORT", "").strip()
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
