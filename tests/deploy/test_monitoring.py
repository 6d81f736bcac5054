"""The chart's monitoring: alert rules that promtool checks and unit-tests, a Grafana dashboard
Grafana can load, and every metric either of them queries exported by a real `wms serve`."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.deploy.conftest import Pod

from wms.data.synth import synth_pair
from wms.drift_report import GAUGES as DRIFT_GAUGES

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "devops" / "helm" / "wms-model"
RULES = CHART / "files" / "alerts.rules.yaml"
DASHBOARD = CHART / "dashboards" / "wms-model.json"
UNIT_TESTS = Path(__file__).with_name("alerts_test.yaml")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not on PATH; `make validators` installs it (Debian's prometheus)"
)

# PromQL words that are not metric names.
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
# Grafana's variables, as a query would see them for a time range of an hour.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$namespace": ".*"}


@dataclass(frozen=True)
class ChartRules:
    """A chart's files/alerts.rules.yaml as its templates/prometheusrule.yaml renders it: each
    WMS_<NAME> token the template replaces, swapped for `defaults`' value of <name> (lower case)
    unless render's own values say otherwise; written beside its promtool unit tests."""

    chart: Path
    unit_tests: Path
    defaults: dict[str, Any]

    @property
    def file(self) -> Path:
        return self.chart / "files" / "alerts.rules.yaml"

    def tokens(self) -> list[str]:
        template = self.chart / "templates" / "prometheusrule.yaml"
        return re.findall(r'replace "(WMS_[A-Z0-9_]+)"', template.read_text())

    def render(self, **values: Any) -> str:
        tokens = {**self.defaults, **values}
        text = self.file.read_text()
        for token in self.tokens():
            text = text.replace(token, str(tokens[token.removeprefix("WMS_").lower()]))
        return text

    def write(self, folder: Path, **values: Any) -> Path:
        """The rendered rules and the unit tests in `folder`; the unit tests' path."""
        (folder / "alerts.rules.yaml").write_text(self.render(**values))
        shutil.copyfile(self.unit_tests, folder / self.unit_tests.name)
        return folder / self.unit_tests.name


def chart_values(chart: Path) -> dict[str, Any]:
    return dict(yaml.safe_load((chart / "values.yaml").read_text()))


_RULE = chart_values(CHART)["prometheusRule"]
# The release in namespace model-3, expected version 3, with the chart's thresholds.
MODEL_RULES = ChartRules(
    CHART,
    UNIT_TESTS,
    {
        "namespace": "model-3",
        "expected_version": "3",
        "error_ratio": _RULE["errorRatio"],
        "p99_seconds": _RULE["p99LatencySeconds"],
        "drift_max_age_hours": _RULE["driftMaxAgeHours"],
    },
)


def _template_tokens() -> list[str]:
    return MODEL_RULES.tokens()


def render_rules(**values: Any) -> str:
    """The rules file as templates/prometheusrule.yaml makes it, for release namespace model-3 and
    expected version 3 unless `values` (the tokens' names, lower case, without WMS_) say otherwise."""
    return MODEL_RULES.render(**values)


def _write_rules(folder: Path, **values: Any) -> Path:
    return MODEL_RULES.write(folder, **values)


def _promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def _rules(text: str) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _dashboard_exprs() -> list[str]:
    board = _dashboard()
    exprs = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(re.sub(r"^label_values\((.*),[^,]*\)$", r"\1", variable["query"]["query"]))
    return exprs


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label matchers,
    ranges, grouping labels, functions, keywords and numbers are taken out."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        if not match[2] and match[1].lower() not in PROMQL_WORDS:
            names.add(match[1])
    return names


def test_metric_names_sees_through_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(wms_x_bucket{route="/p", le=~"0|0.0"}[$__range])))'
        " / on(instance) group_left(version) wms_info > bool 2 or vector(0) unless absent(up offset 5m)"
    )
    assert metric_names(expr) == {"wms_x_bucket", "wms_info", "up"}


def test_the_template_replaces_every_token_of_the_rules_file() -> None:
    body = "\n".join(line for line in RULES.read_text().splitlines() if not line.lstrip().startswith("#"))
    assert set(re.findall(r"WMS_[A-Z0-9_]+", body)) == set(_template_tokens())
    assert "WMS_" not in render_rules()
    names = {rule["alert"] for rule in _rules(render_rules())}
    assert names == {
        "WmsModelHighErrorRate",
        "WmsModelSlowPredictions",
        "WmsModelNotReady",
        "WmsModelVersionNotProduction",
        "WmsInputDrift",
        "WmsDriftReportStale",
        "WmsCaptureInboxFull",
    }
    for rule in _rules(render_rules()):
        # scoped to the release: a kept older release has rules of its own. The drift gauges come
        # from node-exporter's textfile collector (not the release's pods): scoped by model version.
        assert rule["labels"]["namespace"] == "model-3"
        for selector in re.findall(r"(wms_\w+)\{([^}]*)\}", rule["expr"]):
            scope = 'model_version="3"' if selector[0] in DRIFT_GAUGES else 'namespace="model-3"'
            assert scope in selector[1], rule["alert"]


@needs_promtool
def test_promtool_checks_the_rules_file_as_it_is_and_rendered(tmp_path: Path) -> None:
    assert _promtool("check", "rules", RULES).returncode == 0
    rendered = _write_rules(tmp_path).with_name("alerts.rules.yaml")
    checked = _promtool("check", "rules", rendered)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout


@needs_promtool
def test_each_alert_fires_on_its_series_and_none_on_a_healthy_release(tmp_path: Path) -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    firing = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    quiet = {
        case["alertname"] for case in tests[0]["alert_rule_test"] if not case["exp_alerts"]
    }  # the healthy release
    names = {rule["alert"] for rule in _rules(render_rules())}
    assert firing == quiet == names
    result = _promtool("test", "rules", _write_rules(tmp_path).name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_the_thresholds_come_from_the_values(tmp_path: Path) -> None:
    """Rendered with other thresholds, the same series no longer fire those three alerts."""
    unit_tests = _write_rules(tmp_path, error_ratio=0.2, p99_seconds=6, drift_max_age_hours=72)
    result = _promtool("test", "rules", unit_tests.name, cwd=tmp_path)
    assert result.returncode != 0
    failed = set(re.findall(r"alertname: (\w+)", result.stdout + result.stderr))
    assert failed == {"WmsModelHighErrorRate", "WmsModelSlowPredictions", "WmsDriftReportStale"}


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    board = _dashboard()
    assert board["uid"] == "wms-model" and board["title"] and 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert variables["namespace"]["datasource"]["uid"] == "${datasource}"
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert panel["targets"] and len(set(refs)) == len(refs), panel["title"]
        assert all(t["expr"].strip() and t["datasource"] == panel["datasource"] for t in panel["targets"])
    kinds = {p["type"] for p in panels}
    assert {"timeseries", "stat", "table", "heatmap", "bargauge"} <= kinds
    queried = set().union(*map(metric_names, _dashboard_exprs()))
    # what the issue asked for: rate, errors, latency, in flight, version, foreground fraction
    assert {
        "wms_http_requests_total",
        "wms_http_request_duration_seconds_bucket",
        "wms_inferences_in_flight",
        "wms_model_info",
        "wms_predicted_foreground_fraction_bucket",
        "wms_ready",
        "wms_request_header_timeouts_total",  # clients cut (408) for headers that never ended
    } <= queried


@needs_promtool
def test_the_dashboard_queries_are_promql(tmp_path: Path) -> None:
    """Every query, with Grafana's variables filled in, parses as PromQL (as a recording rule)."""
    exprs = _dashboard_exprs()
    for variable, value in GRAFANA_VARIABLES.items():
        exprs = [e.replace(variable, value) for e in exprs]
    rules = [{"record": f"dashboard:query_{n}", "expr": e} for n, e in enumerate(exprs)]
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = _promtool("check", "rules", path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _photo() -> bytes:
    buffer = io.BytesIO()
    synth_pair(seed=3, index=0, size=128)[0].save(buffer, "JPEG")
    return buffer.getvalue()


def test_every_metric_the_dashboard_and_rules_query_is_exported(pod: Pod) -> None:
    answer = httpx.post(f"{pod.url}/predict", files={"file": ("m.jpg", _photo())}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert httpx.post(f"{pod.url}/predict", files={"file": ("m.txt", b"text")}).status_code == 415
    scrape = httpx.get(f"{pod.url}/metrics").text
    exported = {sample.name for family in text_string_to_metric_families(scrape) for sample in family.samples}
    rules = set().union(*(metric_names(rule["expr"]) for rule in _rules(render_rules())))
    # `wms monitor drift` writes these for node-exporter's textfile collector (tests/test_drift.py)
    assert {"wms_drift_psi", "wms_drift_flagged"} <= rules <= exported | set(DRIFT_GAUGES)
    queried = {
        "dashboard": set().union(*map(metric_names, _dashboard_exprs())),
        "rules": rules - set(DRIFT_GAUGES),
    }
    for where, names in queried.items():
        assert names, f"no metric found in the {where}'s queries"
        assert names <= exported, (
            f"the {where} queries metrics that wms serve does not export: {names - exported}"
        )
