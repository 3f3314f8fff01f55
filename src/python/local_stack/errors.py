"""The local stack's errors: each one is printed as one line before exiting non-zero. (An unusable
flag or variable is a `clothing_settings.SettingError`, as in every program here: exit 2.)

StackError                  anything that stops the stack from starting or running
├── ModelDirError           the model directory is missing or not laid out as TF Serving expects
├── PortInUse               a port the stack would listen on is taken
└── ChildFailed             the export, the model server or the gateway exited or never got ready
"""

from __future__ import annotations


class StackError(Exception):
    """Base class; `exit_code` is what the command exits with."""

    exit_code = 1


class ModelDirError(StackError):
    pass


class PortInUse(StackError):
    pass


class ChildFailed(StackError):
    pass
