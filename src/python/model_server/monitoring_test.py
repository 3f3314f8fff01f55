"""The metrics page as TF Serving writes it: names, labels, buckets and units a Prometheus reads."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from clothing_preproc.signature import COURSE_MODEL_NAME
from model_server.monitoring import LATENCY_BOUNDS_US, REQUEST_COUNT, REQUEST_LATENCY, RequestMetrics


def _families(metrics: RequestMetrics) -> dict[str, list[tuple[dict[str, str], float, str]]]:
    # prometheus_client's own parser: what a scraper makes of the page, colons in names included.
    return {
        family.name: [(dict(s.labels), s.value, s.name) for s in family.samples]
        for family in text_string_to_metric_families(metrics.exposition())
    }


def test_grpc_predict_classify_and_regress_are_counted_by_model_and_status() -> None:
    metrics = RequestMetrics()
    metrics.record(COURSE_MODEL_NAME, "Predict", "GRPC", "OK", 0.004)
    metrics.record(COURSE_MODEL_NAME, "Classify", "GRPC", "OK", 0.004)
    metrics.record(COURSE_MODEL_NAME, "Regress", "GRPC", "OK", 0.004)
    metrics.record(COURSE_MODEL_NAME, "Predict", "GRPC", "INVALID_ARGUMENT", 0.001)
    # TF Serving's REST handler and its MultiInference record neither metric.
    metrics.record(COURSE_MODEL_NAME, "Predict", "REST", "OK", 0.002)
    metrics.record(COURSE_MODEL_NAME, "MultiInference", "GRPC", "OK", 0.002)
    counts = {
        labels["status"]: value
        for labels, value, name in _families(metrics)[REQUEST_COUNT]
        if name == f"{REQUEST_COUNT}_total" or name == REQUEST_COUNT
    }
    assert counts == {"OK": 3, "INVALID_ARGUMENT": 1}
    assert f"# TYPE {REQUEST_COUNT} counter" in metrics.exposition()
    timed = {
        labels["API"]
        for labels, _, name in _families(metrics)[REQUEST_LATENCY]
        if name == f"{REQUEST_LATENCY}_count"
    }
    assert timed == {"Predict", "Classify", "Regress"}


def test_latency_is_microseconds_of_successful_requests_only() -> None:
    metrics = RequestMetrics()
    metrics.record("m", "Predict", "GRPC", "OK", 0.004)  # 4000 µs
    metrics.record("m", "Predict", "GRPC", "OK", 0.5)  # 500000 µs
    metrics.record("m", "Predict", "GRPC", "UNAVAILABLE", 30.0)  # not timed, as in TF Serving
    samples = _families(metrics)[REQUEST_LATENCY]
    by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
    for labels, value, name in samples:
        by_name.setdefault(name, []).append((labels, value))
    ((labels, count),) = by_name[f"{REQUEST_LATENCY}_count"]
    assert labels == {"model_name": "m", "API": "Predict", "entrypoint": "GRPC"}
    assert count == 2
    ((_, total),) = by_name[f"{REQUEST_LATENCY}_sum"]
    assert total == 504000
    buckets = {b["le"]: v for b, v in by_name[f"{REQUEST_LATENCY}_bucket"]}
    # 33 bounds from 10 µs by 1.8 (Buckets::Exponential(10, 1.8, 33)), then +Inf.
    assert len(buckets) == 34
    assert len(LATENCY_BOUNDS_US) == 33
    cumulative = [buckets[le] for le in sorted(buckets, key=float)]
    assert cumulative == sorted(cumulative)
    assert buckets["+Inf"] == 2
    below_4ms = max((float(le), v) for le, v in buckets.items() if float(le) < 4000)
    assert below_4ms[1] == 0  # 4000 µs lies above the 3570.47 µs bound
    assert buckets["6426.84"] == 1  # ...and within the next one


def test_bounds_are_written_as_tf_serving_writes_them() -> None:
    metrics = RequestMetrics()
    metrics.record("m", "Predict", "GRPC", "OK", 0.001)
    page = metrics.exposition()
    # absl::StrCat(double): six significant digits, exponent form for large bounds.
    for le in ('le="10"', 'le="18"', 'le="32.4"', 'le="1.27482e+06"', 'le="+Inf"'):
        assert le in page, le
    assert "# HELP" not in page
