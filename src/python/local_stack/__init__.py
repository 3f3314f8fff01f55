"""The local stack (`./pants run src/python/local_stack:local_stack`): model server + gateway, one command.

Public API: `main()` (the command), `StackSettings`/`parse_settings` (its flags), `Stack` (start, wait for
readiness, stop in order), `check_model_dir`/`ensure_demo_model` (what gets served).
"""

from local_stack.main import main
from local_stack.model_dir import check_model_dir, ensure_demo_model
from local_stack.settings import StackSettings, parse_settings
from local_stack.stack import Stack

__all__ = ["Stack", "StackSettings", "check_model_dir", "ensure_demo_model", "main", "parse_settings"]
