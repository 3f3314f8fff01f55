"""The README's settings tables, rendered from the programs' own definitions so a test can hold the
README to them: a setting added, renamed, re-defaulted or re-explained fails the test until the
README's table is replaced with the one the test prints."""

from __future__ import annotations

from collections.abc import Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table: the header, the separator line, one line per row; `|` in a cell escaped."""
    lines = [_line(header), "|" + "---|" * len(header)]
    lines += [_line(row) for row in rows]
    return "\n".join(lines) + "\n"


def table_in(text: str, header: Sequence[str]) -> str:
    """The table in `text` (a Markdown document) whose header line is `header`, through its last row;
    empty if there is none."""
    lines = text.splitlines()
    first = _line(header)
    if first not in lines:
        return ""
    start = lines.index(first)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end]) + "\n"


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"
