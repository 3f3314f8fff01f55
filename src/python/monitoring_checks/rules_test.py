"""The rules and the dashboard, offline: promtool checks and unit-tests the rules, the operator's
PrometheusRule holds the same groups, and every dashboard query is valid PromQL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from monitoring_checks.bundle import (
    DASHBOARD_FILE,
    PROMETHEUS_RULE_FILE,
    RULES_FILE,
    RULES_TEST_FILE,
    alert_names,
    dashboard,
    panels,
    prometheus_tools,
    recording_rules,
    rule_groups,
)

from deploy_checks.testlib import run


@pytest.fixture(scope="module")
def promtool() -> Path:
    return prometheus_tools()[1]


def test_promtool_checks_the_rules(promtool: Path) -> None:
    result = run([promtool, "check", "rules", RULES_FILE])
    assert f"SUCCESS: {len(recording_rules()) + len(alert_names())} rules found" in result.stdout


def test_promtool_unit_tests_pass(promtool: Path) -> None:
    result = run([promtool, "test", "rules", RULES_TEST_FILE], cwd=RULES_TEST_FILE.parent)
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_firing_and_held_back() -> None:
    tests = yaml.safe_load(RULES_TEST_FILE.read_text())["tests"]
    fired: set[str] = set()
    held: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else held).add(check["alertname"])
    assert set(alert_names()) <= fired, set(alert_names()) - fired
    assert set(alert_names()) <= held, set(alert_names()) - held


@pytest.mark.parametrize(
    ("original", "changed"),
    [
        # A threshold loosened tenfold: the firing cases must notice.
        ("gateway:request_errors:ratio_rate5m > 0.05", "gateway:request_errors:ratio_rate5m > 0.5"),
        # The route filter dropped: /readyz's 503s would count as classification errors.
        ("rate(gateway_requests_total{route=~`/predict|/v1/classify(/batch)?|/v[12]/models/\\*`}[5m])",
         "rate(gateway_requests_total[5m])"),
        # The client's 4xx counted as the canary's failures.
        ('(gateway_rollout:requests:rate5m{status=~"5.."})',
         '(gateway_rollout:requests:rate5m{status=~"[45].."})'),
        # The canary's traffic floor dropped: a quiet canary's one or two errors would page.
        ('sum by (namespace) (gateway_rollout:requests:rate5m{label="canary"}) > 0.05',
         'sum by (namespace) (gateway_rollout:requests:rate5m{label="canary"}) > 0'),
        # Microseconds left unconverted: a 2 ms Predict would read as 2000 s.
        ("rate(:tensorflow:serving:request_latency_bucket[5m])))\n          / 1e6",
         "rate(:tensorflow:serving:request_latency_bucket[5m])))"),
    ],
)
def test_the_unit_tests_catch_a_broken_rule(
    promtool: Path, tmp_path: Path, original: str, changed: str
) -> None:
    text = RULES_FILE.read_text()
    assert text.count(original) == 1, original
    (tmp_path / RULES_FILE.name).write_text(text.replace(original, changed))
    (tmp_path / RULES_TEST_FILE.name).write_text(RULES_TEST_FILE.read_text())
    result = run([promtool, "test", "rules", RULES_TEST_FILE.name], cwd=tmp_path, check=False)
    assert result.returncode != 0, result.stdout
    assert "FAILED" in result.stdout + result.stderr


def test_the_prometheus_rule_holds_the_same_groups() -> None:
    rule = yaml.safe_load(PROMETHEUS_RULE_FILE.read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == rule_groups()


def test_every_dashboard_query_is_valid_promql(promtool: Path, tmp_path: Path) -> None:
    # promtool parses a query only inside a rules file: each one becomes a recording rule.
    exprs = [e for panel in panels() for e in panel.exprs]
    assert exprs
    checked = tmp_path / "dashboard-queries.yml"
    rules = [{"record": f"q{i}", "expr": e} for i, e in enumerate(exprs)]
    checked.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run([promtool, "check", "rules", checked])
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_a_bad_query_is_refused_by_that_check(promtool: Path, tmp_path: Path) -> None:
    checked = tmp_path / "bad.yml"
    bad = {"groups": [{"name": "d", "rules": [{"record": "q", "expr": "sum by (le (x)"}]}]}
    checked.write_text(yaml.safe_dump(bad))
    assert run([promtool, "check", "rules", checked], check=False).returncode != 0


def test_the_dashboard_is_one_grafana_dashboard_with_a_datasource_choice() -> None:
    board = dashboard()
    assert board["uid"] == "clothing-classifier"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in board["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            # Queries run as they are against any Prometheus: no Grafana variables in them.
            assert not re.search(r"\$\w", target["expr"]), target["expr"]


def test_the_dashboard_shows_every_recording_rule() -> None:
    text = DASHBOARD_FILE.read_text()
    missing = [r for r in recording_rules() if r not in text]
    assert not missing, f"recording rules no panel shows: {missing}"
