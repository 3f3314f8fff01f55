"""gateway: the clothing classifier's HTTP front (Starlette): image URL or upload -> TF Serving -> scores.

Public API:

- `Settings` (and `SettingsError`): everything configurable, read once with `Settings.from_environ`.
- `create_app(settings, resolver=…)`: the ASGI app; `resolver` resolves image URL host names.
- `main()`: the `python -m gateway` entry point (uvicorn).
"""

from gateway.app import create_app
from gateway.settings import ENVIRONMENT, Settings, SettingsError

__all__ = ["ENVIRONMENT", "Settings", "SettingsError", "create_app"]
