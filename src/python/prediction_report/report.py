"""Prediction log lines -> per model version: counts, top-1 class frequencies, score distributions.

`Report.add_line` takes one line of a log as the gateway writes it (docs/prediction-log.md); a line
that is not a prediction record (not JSON, a field missing or of the wrong type, a schema version
this reader does not know) is counted as malformed with its reason, never raised. `Report.summary`
is what the command prints, as plain data.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# The schema versions this reader understands.
SCHEMA_VERSIONS = frozenset({1})
# Examples of malformed lines kept for the report (the count covers them all).
_EXAMPLES = 5


class Malformed(ValueError):
    """Why a line is not a prediction record."""


@dataclass(frozen=True)
class Record:
    """The fields of one line the report reads."""

    model: str
    version: int | None
    request_id: str
    label: str  # the top-1 class
    probability: float  # its probability


def parse_record(line: str) -> Record:
    """One log line as a `Record`; `Malformed` says what is wrong with it."""
    try:
        data = json.loads(line)
    except ValueError:
        raise Malformed("not JSON") from None
    if not isinstance(data, dict):
        raise Malformed("not a JSON object")
    version = data.get("schema_version")
    if version not in SCHEMA_VERSIONS:
        raise Malformed(f"schema_version {version!r} is not one this reader knows ({_known()})")
    model = _field(data, "model", dict)
    top = _field(data, "top", list)
    if not top or not isinstance(top[0], dict):
        raise Malformed("'top' holds no class")
    label = _field(top[0], "label", str)
    probability = _field(top[0], "probability", (int, float))
    model_version = model.get("version")
    if model_version is not None and not isinstance(model_version, int):
        raise Malformed("'version' is not a whole number")
    request_id = data.get("request_id")
    return Record(
        model=_field(model, "name", str),
        version=model_version,
        request_id=request_id if isinstance(request_id, str) else "",
        label=label,
        probability=float(probability),
    )


def _known() -> str:
    return ", ".join(map(str, sorted(SCHEMA_VERSIONS)))


def _field(data: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(name)
    if value is None:
        raise Malformed(f"no '{name}'")
    if not isinstance(value, kind) or isinstance(value, bool):
        raise Malformed(f"'{name}' is not a {_kind_name(kind)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {dict: "JSON object", list: "list", str: "string", int: "number", float: "number"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return names.get(kinds[0], kinds[0].__name__)


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """p10, p50, p90, interpolated between the nearest values (a single value is all three)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    deciles = statistics.quantiles(values, n=10, method="inclusive")
    return deciles[0], deciles[4], deciles[8]


@dataclass
class _Version:
    requests: set[str] = field(default_factory=set)
    unnamed_requests: int = 0  # lines without a request id: each counts as its own request
    probabilities: dict[str, list[float]] = field(default_factory=dict)  # top-1 class -> probabilities

    def add(self, record: Record) -> None:
        if record.request_id:
            self.requests.add(record.request_id)
        else:
            self.unnamed_requests += 1
        self.probabilities.setdefault(record.label, []).append(record.probability)


@dataclass
class Report:
    versions: dict[tuple[str, int | None], _Version] = field(default_factory=dict)
    lines: int = 0
    malformed: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add_line(self, line: str, where: str) -> None:
        """One line of a log; `where` (`file:line`) names it in the malformed examples."""
        if not line.strip():
            return
        self.lines += 1
        try:
            record = parse_record(line)
        except Malformed as e:
            self.malformed[str(e)] += 1
            if len(self.examples) < _EXAMPLES:
                self.examples.append(f"{where}: {e}")
            return
        self.versions.setdefault((record.model, record.version), _Version()).add(record)

    def summary(self) -> dict[str, Any]:
        """The report as plain data (what `--format json` prints)."""
        models = []
        # By model name, then version (a line without a version first).
        ordered = sorted(self.versions.items(), key=lambda kv: (kv[0][0], _version_order(kv[0][1])))
        for (model, version), seen in ordered:
            every = [p for values in seen.probabilities.values() for p in values]
            classes = []
            # Most frequent top-1 class first; ties by name.
            for label, values in sorted(seen.probabilities.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                p10, p50, p90 = quantiles(values)
                classes.append(
                    {
                        "label": label,
                        "images": len(values),
                        "share": len(values) / len(every),
                        "mean": statistics.fmean(values),
                        "p10": p10,
                        "p50": p50,
                        "p90": p90,
                    }
                )
            p10, p50, p90 = quantiles(every)
            models.append(
                {
                    "model": model,
                    "version": version,
                    "requests": len(seen.requests) + seen.unnamed_requests,
                    "images": len(every),
                    "top1": {"mean": statistics.fmean(every), "p10": p10, "p50": p50, "p90": p90},
                    "classes": classes,
                }
            )
        return {
            "lines": self.lines,
            "malformed": {
                "lines": sum(self.malformed.values()),
                "reasons": dict(self.malformed.most_common()),
                "examples": list(self.examples),
            },
            "versions": models,
        }


def _version_order(version: int | None) -> int:
    return -1 if version is None else version


def table(summary: dict[str, Any]) -> str:
    """The summary as text: one table per model version, then the malformed lines, if any."""
    out: list[str] = []
    for v in summary["versions"]:
        version = "none" if v["version"] is None else v["version"]
        top1 = v["top1"]
        out.append(
            f"{v['model']} version {version}: {v['requests']} requests, {v['images']} images; "
            f"top-1 probability mean {top1['mean']:.3f}, "
            f"p10 {top1['p10']:.3f}, p50 {top1['p50']:.3f}, p90 {top1['p90']:.3f}"
        )
        rows = [("top-1 class", "images", "share", "mean p", "p10", "p50", "p90")]
        for c in v["classes"]:
            rows.append(
                (
                    c["label"],
                    str(c["images"]),
                    f"{c['share']:.1%}",
                    *(f"{c[k]:.3f}" for k in ("mean", "p10", "p50", "p90")),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            # The class name left-aligned, the figures right-aligned.
            cells = [row[0].ljust(widths[0])]
            cells += [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
            out.append("  " + "  ".join(cells).rstrip())
        out.append("")
    if not summary["versions"]:
        out.append("no prediction records")
        out.append("")
    malformed = summary["malformed"]
    if malformed["lines"]:
        reasons = "; ".join(f"{n} {reason}" for reason, n in malformed["reasons"].items())
        skipped = f"{malformed['lines']} of {summary['lines']} lines skipped"
        out.append(f"{skipped}, not prediction records: {reasons}")
        out.extend(f"  {example}" for example in malformed["examples"])
    return "\n".join(out).rstrip("\n") + "\n"
