"""clothing_settings: the one way the project's programs read their settings and name a bad one.

Every program has a `parse_settings(argv, environ)` in its settings module that returns frozen
settings or raises `SettingError` (whose message is one line naming the setting and the
problem); its `main()` prints that line and exits 2. The three command lines take their values
through the `validators` here and are built on `SettingsParser`, which turns argparse's usage
errors into a `SettingError` too. `markdown_table` renders a settings table for the README, whose
tests compare it with the README's copy.
"""

from clothing_settings.errors import SettingError
from clothing_settings.parser import SettingsParser
from clothing_settings.tables import markdown_table, table_in

__all__ = ["SettingError", "SettingsParser", "markdown_table", "table_in"]
