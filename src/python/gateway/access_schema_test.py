"""schemathesis against a gateway with API keys on: the schema's security is what the gateway does.

A bounded run (a few examples per operation) of the schemathesis CLI, packaged from the
python-default resolve as src/python/reliability:schemathesis, against a real gateway whose TF
Serving is down (every classification is a documented 503; image URLs name hosts that do not
resolve here, a documented 502). It sends the key as `X-API-Key`; `ignored_auth` sends requests
without it, or with a wrong one, and fails if any protected operation answers them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from api_keys.key_file import digest_of
from gateway import parse_settings
from testing_support.in_process_gateway import RunningGateway
from testing_support.ports import closed_port_address

SCHEMATHESIS_PEX = Path("src.python.reliability/schemathesis.pex")
KEY = "schema-test-key-5e1f0c"


def test_schemathesis_with_a_key_finds_the_schemas_security_enforced(
    run_gateway: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"schemathesis {digest_of(KEY).hex()}\n")
    environ = {
        "TF_SERVING_HOST": closed_port_address(),
        "GATEWAY_API_KEYS_FILE": str(keys),
        "GATEWAY_DNS_TIMEOUT": "0.5",
    }
    gw = run_gateway(parse_settings([], environ))
    checks = [
        "ignored_auth",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEX")}
    run = subprocess.run(
        [
            sys.executable,
            str(SCHEMATHESIS_PEX.resolve()),
            "run",
            f"{gw.url}/openapi.json",
            f"--header=X-API-Key: {KEY}",
            f"--checks={','.join(checks)}",
            "--max-examples=5",
            "--seed=21",
            "--workers=1",
            "--phases=examples,fuzzing",
            "--request-timeout=30",
            "--suppress-health-check=all",
            "--no-color",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    tested = re.search(r"Tested: (\d+)", output)
    assert tested, output[-2000:]
    assert int(tested.group(1)) >= 18, "every operation of the schema was called"
