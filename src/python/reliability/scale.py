"""How big the system tests run: small in CI, full size on request.

`RELIABILITY_SCALE=full` selects the documented full-size runs (5-minute soak, thousands of fuzz
inputs); anything else, or nothing, the CI sizes. Single figures can be overridden one by one,
e.g. `RELIABILITY_SOAK_SECONDS=600`. Pants passes them with `--test-extra-env-vars`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Scale:
    name: str
    soak_seconds: float  # length of the fixed-rate soak
    soak_rate: float  # requests per second during the soak
    fuzz_examples: int  # hypothesis examples per fuzzed input kind
    mutated_images: int  # corrupted JPEG/PNG files sent
    fault_load_seconds: float  # background load around each fault
    hostile_connections: int  # half-open connections held against the gateway at once


CI = Scale(
    "ci",
    soak_seconds=40,
    soak_rate=10,
    fuzz_examples=60,
    mutated_images=120,
    fault_load_seconds=3,
    hostile_connections=3000,
)
FULL = Scale(
    "full",
    soak_seconds=300,
    soak_rate=20,
    fuzz_examples=1000,
    mutated_images=2000,
    fault_load_seconds=10,
    hostile_connections=20000,
)


def current() -> Scale:
    base = FULL if os.environ.get("RELIABILITY_SCALE", "").strip().lower() == "full" else CI
    overrides: dict[str, object] = {}
    for f in fields(Scale):
        raw = os.environ.get(f"RELIABILITY_{f.name.upper()}", "").strip()
        if raw and f.name != "name":
            overrides[f.name] = int(raw) if f.type in ("int", int) else float(raw)
    return replace(base, **overrides)  # type: ignore[arg-type]
