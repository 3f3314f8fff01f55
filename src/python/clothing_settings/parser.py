"""`SettingsParser`: argparse whose usage errors are a `SettingError`, one line, not a usage dump."""

from __future__ import annotations

import argparse
from typing import NoReturn

from clothing_settings.errors import SettingError


class SettingsParser(argparse.ArgumentParser):
    """An ArgumentParser for the project's commands. A bad flag raises `SettingError` (the program's
    `main()` prints it as one line and exits 2); `--help` still prints and exits 0. Subcommand
    parsers made with `add_subparsers()` are of this class too."""

    def error(self, message: str) -> NoReturn:
        raise SettingError.from_usage(message)
