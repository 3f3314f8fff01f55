"""gateway: the clothing classifier's HTTP front (Starlette): image URL or upload -> TF Serving -> scores.

Public API:

- `Settings` and its parts (`ServingTarget`, `Admission`, `FetchPolicy`, `ConnectionLimits`,
  `Listener`): everything configurable, read once with `parse_settings(argv, environ)`, which
  raises `clothing_settings.SettingError`; `VARIABLES` lists the environment variables.
- `create_app(settings, resolver=…)`: the ASGI app; `resolver` resolves image URL host names.
- `main()`: the `python -m gateway` entry point (uvicorn).
"""

from gateway.app import create_app
from gateway.fetch import FetchPolicy
from gateway.settings import (
    VARIABLES,
    Admission,
    ConnectionLimits,
    Listener,
    ServingTarget,
    Settings,
    parse_settings,
)

__all__ = [
    "VARIABLES",
    "Admission",
    "ConnectionLimits",
    "FetchPolicy",
    "Listener",
    "ServingTarget",
    "Settings",
    "create_app",
    "parse_settings",
]
