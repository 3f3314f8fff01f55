"""Request metrics under TF Serving's names, in Prometheus' text format (`--monitoring_config_file`).

TF Serving exports its TensorFlow monitoring metrics with `/` turned into `:`; the two a dashboard
of TF Serving reads for requests are kept here as TF Serving 2.x writes them
(tensorflow_serving/servables/tensorflow/util.cc, model_servers/prediction_service_impl.cc):

    :tensorflow:serving:request_count{model_name, status}              counter
    :tensorflow:serving:request_latency{model_name, API, entrypoint}   histogram, microseconds,
                                                                       successful requests only

Like TF Serving, it counts the gRPC PredictionService's Predict, Classify and Regress calls
(entrypoint "GRPC"); TF Serving's REST API and MultiInference record neither metric, so the
REST front's and MultiInference's calls are left out here too.

`status` is the canonical gRPC code's name (OK, INVALID_ARGUMENT, …). TF Serving's page has
`# TYPE` lines and no `# HELP`, bucket bounds and sums written with six significant digits
(`le="1.27482e+06"`); so has this one. TensorFlow's own runtime metrics (graph runs, load
latencies, …) are not reproduced. TF Serving has no metric of model availability (GetModelStatus
tells it), so neither has this page.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"

# The calls TF Serving records, as (API, entrypoint): model_servers/prediction_service_impl.cc.
_RECORDED = frozenset({("Predict", "GRPC"), ("Classify", "GRPC"), ("Regress", "GRPC")})

# TF Serving's buckets for request_latency: Buckets::Exponential(10, 1.8, 33), i.e. 33 bounds from
# 10 µs growing by 1.8 (the last about 1.5e9 µs, 25 minutes), then +Inf.
LATENCY_BOUNDS_US: tuple[float, ...] = tuple(10 * 1.8**i for i in range(33))

_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}"


def _number(value: float) -> str:
    # absl::StrCat(double), as TF Serving's exporter writes bounds and sums: six significant digits.
    return format(value, ".6g")


class RequestMetrics:
    """Counts and times requests; `exposition()` is what the Prometheus path answers."""

    content_type = _CONTENT_TYPE

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = defaultdict(int)
        # key -> (bucket counts, sum, count)
        self._latency: dict[tuple[str, str, str], tuple[list[int], float, int]] = {}

    def record(self, model_name: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        """One request answered with `status` (a gRPC code's name) after `seconds`; ignored if TF
        Serving would not record it."""
        if (api, entrypoint) not in _RECORDED:
            return
        micros = seconds * 1e6
        with self._lock:
            self._counts[(model_name, status)] += 1
            if status != "OK":
                # TF Serving times only the requests that succeed.
                return
            key = (model_name, api, entrypoint)
            buckets, total, count = self._latency.get(key) or ([0] * (len(LATENCY_BOUNDS_US) + 1), 0.0, 0)
            buckets[bisect.bisect_left(LATENCY_BOUNDS_US, micros)] += 1
            self._latency[key] = (buckets, total + micros, count + 1)

    def exposition(self) -> str:
        with self._lock:
            counts = sorted(self._counts.items())
            latency = sorted((k, (list(b), s, c)) for k, (b, s, c) in self._latency.items())
        lines = [f"# TYPE {REQUEST_COUNT} counter"]
        lines += [f"{REQUEST_COUNT}{_labels(('model_name', 'status'), key)} {n}" for key, n in counts]
        lines += [f"# TYPE {REQUEST_LATENCY} histogram"]
        names = ("model_name", "API", "entrypoint")
        for key, (buckets, total, count) in latency:
            cumulative = 0
            for bound, n in zip((*LATENCY_BOUNDS_US, float("inf")), buckets, strict=True):
                cumulative += n
                le = "+Inf" if bound == float("inf") else _number(bound)
                le_label = f'le="{le}"'
                lines.append(f"{REQUEST_LATENCY}_bucket{_labels(names, key, le_label)} {cumulative}")
            lines.append(f"{REQUEST_LATENCY}_sum{_labels(names, key)} {_number(total)}")
            lines.append(f"{REQUEST_LATENCY}_count{_labels(names, key)} {count}")
        return "\n".join(lines) + "\n"
