"""The production address's monitoring (devops/helm/wms-entry): alert rules that promtool checks and
unit-tests, and every metric they query exported by the real proxy at /_proxy/metrics."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.deploy.test_monitoring import (
    ChartRules,
    _promtool,
    _rules,
    chart_values,
    metric_names,
    needs_promtool,
)

from wms.deploy.proxy import create_proxy, write_upstream

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "devops" / "helm" / "wms-entry"
RULES = CHART / "files" / "alerts.rules.yaml"
UNIT_TESTS = Path(__file__).with_name("entry_alerts_test.yaml")


# svc/wms-model in namespace wms, with the chart's errorRatio
ENTRY_RULES = ChartRules(
    CHART,
    UNIT_TESTS,
    {
        "namespace": "wms",
        "service": "wms-model",
        "error_ratio": chart_values(CHART)["prometheusRule"]["errorRatio"],
    },
)
render_rules, _write_rules, _template_tokens = ENTRY_RULES.render, ENTRY_RULES.write, ENTRY_RULES.tokens


def test_the_template_replaces_every_token_and_each_rule_watches_the_address_alone() -> None:
    body = "\n".join(line for line in RULES.read_text().splitlines() if not line.lstrip().startswith("#"))
    assert set(re.findall(r"WMS_[A-Z0-9_]+", body)) == set(_template_tokens())
    assert "WMS_" not in render_rules()
    rules = _rules(render_rules())
    assert {rule["alert"] for rule in rules} == {"WmsAddressFailing", "WmsAddressDown"}
    for rule in rules:  # not the model releases' Services, which share the name in their namespaces
        assert rule["labels"]["namespace"] == "wms"
        for selector in re.findall(r"\w+\{([^}]*)\}", rule["expr"]):
            assert 'namespace="wms", service="wms-model"' in selector, rule["alert"]


@needs_promtool
def test_each_alert_fires_on_its_series_and_none_on_a_healthy_address(tmp_path: Path) -> None:
    assert _promtool("check", "rules", RULES).returncode == 0
    unit_tests = _write_rules(tmp_path)
    checked = _promtool("check", "rules", unit_tests.with_name("alerts.rules.yaml"))
    assert checked.returncode == 0 and "SUCCESS: 2 rules found" in checked.stdout, (
        checked.stdout + checked.stderr
    )
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    firing = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for case in tests[0]["alert_rule_test"] if not case["exp_alerts"]}
    assert firing == quiet == {rule["alert"] for rule in _rules(render_rules())}
    result = _promtool("test", "rules", unit_tests.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_the_share_of_failed_requests_comes_from_the_values(tmp_path: Path) -> None:
    """With errorRatio 1 no share can exceed it: the address that fails every request no longer fires."""
    result = _promtool("test", "rules", _write_rules(tmp_path, error_ratio=1).name, cwd=tmp_path)
    assert result.returncode != 0
    assert set(re.findall(r"alertname: (\w+)", result.stdout + result.stderr)) == {"WmsAddressFailing"}


def test_every_metric_the_rules_query_is_exported_by_the_proxy(
    tmp_path: Path, live_server: Callable[..., Any]
) -> None:
    """`up` is Prometheus's own; every other name the rules read comes from /_proxy/metrics."""
    upstream = tmp_path / "upstream.json"
    with live_server(create_proxy(upstream)) as proxy:
        assert httpx.get(f"{proxy.url}/ready").status_code == 503  # nothing deployed yet
        write_upstream(upstream, "http://127.0.0.1:9", "3")  # the discard port: nothing listens
        scrape = httpx.get(f"{proxy.url}/_proxy/metrics").text
    exported = {sample.name for family in text_string_to_metric_families(scrape) for sample in family.samples}
    queried = set().union(*(metric_names(rule["expr"]) for rule in _rules(render_rules())))
    assert "up" in queried and queried - {"up"} <= exported, queried - exported
