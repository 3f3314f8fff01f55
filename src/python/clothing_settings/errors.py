"""`SettingError`: a flag, environment variable or config file holds a value a program cannot use."""

from __future__ import annotations

import re


class SettingError(ValueError):
    """A setting the program cannot use. `str()` is one line that names the setting and the problem.

    `problem` may already name the setting (`GATEWAY_PORT='x' is not a whole number`); if it does
    not, the line is `setting: problem`.
    """

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = " ".join(problem.split())
        super().__init__(self.problem if setting in self.problem else f"{setting}: {self.problem}")

    @classmethod
    def from_usage(cls, message: str) -> SettingError:
        """From argparse's words for a usage error (`argument --port: …`, `unrecognized arguments: …`,
        `the following arguments are required: …`), which name the setting already."""
        named = re.match(r"argument ([^:]+): ", message)
        if named is not None:
            return cls(named.group(1), message)
        _, colon, listed = message.rpartition(": ")
        return cls(listed if colon else "the command line", message)
