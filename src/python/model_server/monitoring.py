"""Request metrics under TF Serving's names, in Prometheus' text format (`--monitoring_config_file`).

TF Serving exports its TensorFlow monitoring metrics with `/` turned into `:`; the two a dashboard
of TF Serving reads for requests are kept here with the same names, labels and units:

    :tensorflow:serving:request_count{model_name, status}              counter
    :tensorflow:serving:request_latency{model_name, API, entrypoint}   histogram, microseconds

TensorFlow's own runtime metrics (graph runs, load latencies, …) are not reproduced.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"

# TF Serving's buckets for request_latency: exponential, scale 10 µs, growth 1.8, 33 buckets.
LATENCY_BOUNDS_US: tuple[float, ...] = tuple(10 * 1.8**i for i in range(32))

_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}"


def _number(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


class RequestMetrics:
    """Counts and times requests; `exposition()` is what the Prometheus path answers."""

    content_type = _CONTENT_TYPE

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = defaultdict(int)
        # key -> (bucket counts, sum, count)
        self._latency: dict[tuple[str, str, str], tuple[list[int], float, int]] = {}

    def record(self, model_name: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        micros = seconds * 1e6
        with self._lock:
            self._counts[(model_name, status)] += 1
            key = (model_name, api, entrypoint)
            buckets, total, count = self._latency.get(key) or ([0] * (len(LATENCY_BOUNDS_US) + 1), 0.0, 0)
            buckets[bisect.bisect_left(LATENCY_BOUNDS_US, micros)] += 1
            self._latency[key] = (buckets, total + micros, count + 1)

    def exposition(self) -> str:
        with self._lock:
            counts = sorted(self._counts.items())
            latency = sorted((k, (list(b), s, c)) for k, (b, s, c) in self._latency.items())
        lines = [
            f"# HELP {REQUEST_COUNT} The total number of requests.",
            f"# TYPE {REQUEST_COUNT} counter",
        ]
        lines += [f"{REQUEST_COUNT}{_labels(('model_name', 'status'), key)} {n}" for key, n in counts]
        lines += [
            f"# HELP {REQUEST_LATENCY} Distribution of wall time (in microseconds) for Tensorflow "
            "Serving request.",
            f"# TYPE {REQUEST_LATENCY} histogram",
        ]
        names = ("model_name", "API", "entrypoint")
        for key, (buckets, total, count) in latency:
            cumulative = 0
            for bound, n in zip((*LATENCY_BOUNDS_US, float("inf")), buckets, strict=True):
                cumulative += n
                le = "+Inf" if bound == float("inf") else _number(round(bound, 3))
                le_label = f'le="{le}"'
                lines.append(f"{REQUEST_LATENCY}_bucket{_labels(names, key, le_label)} {cumulative}")
            lines.append(f"{REQUEST_LATENCY}_sum{_labels(names, key)} {_number(round(total, 3))}")
            lines.append(f"{REQUEST_LATENCY}_count{_labels(names, key)} {count}")
        return "\n".join(lines) + "\n"
