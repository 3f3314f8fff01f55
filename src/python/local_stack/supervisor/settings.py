"""The stack's settings: flags, each with an environment variable as its default, read once."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from local_stack.supervisor.errors import SettingsError

DEFAULT_MODEL_NAME = "clothing-model"


# The cache's demo models live in `<cache>/models-r<DEMO_REVISION>`. Bump the revision when `export
# demo` starts writing something the stack relies on that demos exported earlier lack (2: the
# `pixels` signature): the next run then exports afresh instead of serving the stale one.
DEMO_REVISION = 2


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    root = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "clothing-classifier" / "local-stack"


@dataclass(frozen=True)
class StackSettings:
    # The folder holding numbered versions (TF Serving's --model_base_path); None: the demo model.
    model_dir: Path | None
    # host:port of a running TF Serving to use instead of starting the local model server.
    tf_serving: str | None
    model_name: str
    host: str
    port: int
    grpc_port: int
    rest_port: int
    cache_dir: Path
    # Seconds to wait for the stack to become ready (a first run also exports the demo model).
    ready_timeout: float

    @property
    def url(self) -> str:
        shown = "localhost" if self.host in ("127.0.0.1", "0.0.0.0", "::", "localhost") else self.host  # noqa: S104
        return f"http://{shown}:{self.port}"

    @property
    def demo_base(self) -> Path:
        """Where the demo model is exported: `<cache>/models-r<revision>/<name>/<version>/`."""
        return self.cache_dir / f"models-r{DEMO_REVISION}"


def parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="local_stack",
        description=(
            "Run the clothing classifier locally: the TF-Serving-compatible model server and the gateway "
            "(web page and API). With no model given, the tiny untrained demo model is exported into the "
            "cache folder on first run. Ctrl-C stops both."
        ),
        epilog=(
            "The gateway's own settings (GATEWAY_*, see the README) are passed through from the "
            "environment, e.g. GATEWAY_FETCH_ALLOW_NETWORKS=127.0.0.0/8 to classify images served "
            "on this machine."
        ),
    )
    env = environ.get
    p.add_argument(
        "--model-dir",
        type=Path,
        default=env("CLOTHING_MODEL_DIR") or None,
        help="a model folder as export writes it: <base>/<model name>, holding numbered versions "
        "(env CLOTHING_MODEL_DIR; default: the demo model)",
    )
    p.add_argument(
        "--tf-serving",
        default=env("CLOTHING_TF_SERVING") or None,
        metavar="HOST:PORT",
        help="use this running TF Serving (gRPC) instead of starting the local model server "
        "(env CLOTHING_TF_SERVING)",
    )
    p.add_argument(
        "--model-name",
        default=env("CLOTHING_MODEL_NAME") or DEFAULT_MODEL_NAME,
        help=f"the model's name in TF Serving (env CLOTHING_MODEL_NAME; default {DEFAULT_MODEL_NAME})",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the gateway listens on (default 127.0.0.1: this machine only; 0.0.0.0 for the network)",
    )
    p.add_argument("--port", type=_port, default=9696, help="the gateway's port (default 9696)")
    p.add_argument(
        "--grpc-port", type=_port, default=8500, help="the model server's gRPC port (default 8500)"
    )
    p.add_argument(
        "--rest-port", type=_port, default=8501, help="the model server's REST port (default 8501; 0: off)"
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=env("CLOTHING_CACHE_DIR") or default_cache_dir(environ),
        help="where the demo model is exported (env CLOTHING_CACHE_DIR; "
        "default ~/.cache/clothing-classifier/local-stack)",
    )
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for everything to be ready before giving up (default 300)",
    )
    return p


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> StackSettings:
    """Settings from the command line and the environment (argparse exits on --help and usage errors)."""
    ns = parser(environ).parse_args(list(argv))
    if ns.model_dir is not None and ns.tf_serving is not None:
        raise SettingsError(
            "give --model-dir or --tf-serving, not both: an existing TF Serving has its own model"
        )
    if ns.tf_serving is not None and (":" not in ns.tf_serving or any(c.isspace() for c in ns.tf_serving)):
        raise SettingsError(f"--tf-serving {ns.tf_serving!r}: expected HOST:PORT, e.g. localhost:8500")
    if not ns.ready_timeout > 0:
        raise SettingsError("--ready-timeout must be more than 0 seconds")
    return StackSettings(
        model_dir=ns.model_dir.expanduser().resolve() if ns.model_dir else None,
        tf_serving=ns.tf_serving,
        model_name=ns.model_name,
        host=ns.host,
        port=ns.port,
        grpc_port=ns.grpc_port,
        rest_port=ns.rest_port,
        cache_dir=ns.cache_dir.expanduser(),
        ready_timeout=ns.ready_timeout,
    )


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return value
