"""`prediction-report [FILE …]`: the prediction log as a table per model version (or JSON).

    ./pants prediction-report -- predictions.jsonl
    ./pants prediction-report -- --format json a.jsonl b.jsonl
    gateway … | ./pants prediction-report            (no file or `-`: standard input)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from clothing_settings import SettingError, SettingsParser
from prediction_report.report import Report, table

PROG = "prediction-report"


def parser() -> argparse.ArgumentParser:
    p = SettingsParser(
        prog=PROG,
        description=(
            "Read prediction logs as the gateway writes them (GATEWAY_PREDICTION_LOG; the schema is "
            "docs/prediction-log.md) and print, per model version: requests and images, how often "
            "each class was the top-1 answer, and the top-1 probability's distribution (mean, p10, "
            "p50, p90) overall and per class. Lines that are not prediction records (uvicorn's "
            "access log on a shared standard output, cut or foreign lines) are counted and skipped."
        ),
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="log files; none or '-': standard input")
    p.add_argument(
        "--format", choices=("table", "json"), default="table", help="table (default) or json"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SettingError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    report = Report()
    for name in args.files or ["-"]:
        try:
            if name == "-":
                _read(report, sys.stdin, "<stdin>")
            else:
                with open(name, encoding="utf-8", errors="replace") as f:
                    _read(report, f, name)
        except OSError as e:
            print(f"{PROG}: cannot read {name}: {e.strerror or e}", file=sys.stderr)
            return 1
    summary = report.summary()
    if args.format == "json":
        print(json.dumps(summary, indent=2))
    else:
        sys.stdout.write(table(summary))
    return 0


def _read(report: Report, lines: TextIO, name: str) -> None:
    for number, line in enumerate(lines, start=1):
        report.add_line(line, f"{name}:{number}")


if __name__ == "__main__":
    sys.exit(main())
