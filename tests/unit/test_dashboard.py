"""The Grafana dashboard shipped in the chart: valid against the dashboard JSON model, laid out
on Grafana's 24-column grid, every query parsed by a real PromQL parser, and covering what an
operator asks of it. That every metric and attribute a query names is really exported is
checked against a live gateway's /metrics in tests/integration/test_prometheus.py."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import promql_parser

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "helm" / "celgate" / "dashboards" / "celgate.json"
SCHEMA = ROOT / "tests" / "schemas" / "grafana-dashboard.schema.json"

# Values Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__range": "1h",
    "$__interval": "1m",
}
PROMOTED_LABEL = "project"  # the `label` variable's default


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def expressions(dashboard: dict[str, Any] | None = None) -> list[str]:
    """Every PromQL expression, with Grafana's variables substituted as Grafana would."""
    dashboard = dashboard or load()
    raw = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            query = query["query"]
        if variable["type"] == "query" and isinstance(query, str):
            # label_values(metric, label) is Grafana's own function; its selector is PromQL.
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
            assert match, f"variable {variable['name']}: unexpected query {query!r}"
            raw.append(f"group by ({match[2]}) ({match[1]})")
    return [substitute(expr, dashboard) for expr in raw]


def substitute(expr: str, dashboard: dict[str, Any]) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    for variable in dashboard["templating"]["list"]:
        name = variable["name"]
        value = {"tenant": ".*", "label": PROMOTED_LABEL}.get(name)
        if value is not None:
            expr = re.sub(rf"\$\{{{name}\}}|\${name}\b", value, expr)
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


@dataclass(frozen=True)
class Selector:
    metric: str
    labels: frozenset[str]  # label names the query matches or groups by


def selectors(dashboard: dict[str, Any] | None = None) -> list[Selector]:
    """The metric each vector selector names, with the labels the query uses on it."""
    found: list[Selector] = []
    for expr in expressions(dashboard):
        tree = promql_parser.parse(expr)
        grouping: set[str] = set()
        metrics: list[tuple[str, set[str]]] = []

        def visit(node: Any, grouping: set[str] = grouping, metrics: list[Any] = metrics) -> bool:
            if isinstance(node, promql_parser.AggregateExpr) and node.modifier:
                grouping.update(node.modifier.labels)
            if isinstance(node, promql_parser.VectorSelector):
                matchers = node.matchers.matchers if node.matchers else []
                metrics.append((node.name, {m.name for m in matchers}))
            return True

        promql_parser.walk(tree, visit)
        assert metrics, f"no metric in {expr!r}"
        for metric, matched in metrics:
            # `le` is the histogram buckets' own label.
            found.append(Selector(metric, frozenset((matched | grouping) - {"le", "__name__"})))
    return found


def test_dashboard_validates_against_the_grafana_dashboard_schema() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(load())


def test_the_schema_rejects_what_grafana_rejects() -> None:
    # The schema is ours: prove it is not a rubber stamp.
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    good = load()
    broken = [
        {**good, "graphTooltip": 3},
        {**good, "panels": [{**good["panels"][1], "gridPos": {"h": 8, "w": 25, "x": 0, "y": 0}}]},
        {**good, "panels": [{**good["panels"][1], "targets": [{"expr": "up"}]}]},  # no refId
        {**good, "panels": [{k: v for k, v in good["panels"][1].items() if k != "fieldConfig"}]},
        {**good, "templating": {"list": [{"type": "dropdown", "name": "x"}]}},
        {k: v for k, v in good.items() if k != "time"},
        {**good, "titel": "typo"},
    ]
    for doc in broken:
        assert not validator.is_valid(doc)


def test_panels_fit_the_grid_without_overlapping_and_ids_are_unique() -> None:
    dashboard = load()
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]
        ref_ids = [t["refId"] for t in panel.get("targets", [])]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_every_query_uses_the_prometheus_datasource_variable() -> None:
    dashboard = load()
    (source,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    reference = {"type": "prometheus", "uid": "${" + source["name"] + "}"}
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == reference, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == reference, panel["title"]


def test_every_query_is_valid_promql() -> None:
    exprs = expressions()
    assert len(exprs) >= 15
    for expr in exprs:
        promql_parser.parse(expr)  # raises on a syntax error


def test_dashboard_covers_what_operators_ask_for() -> None:
    by_metric: dict[str, set[str]] = {}
    for selector in selectors():
        by_metric.setdefault(selector.metric, set()).update(selector.labels)
    cost = by_metric["celgate_cost_USD_total"]
    for dimension in ("celgate_tenant", "celgate_model", "celgate_task_type"):
        assert dimension in cost
    assert f"celgate_label_{PROMOTED_LABEL}" in cost
    assert {"celgate_tenant", "gen_ai_token_type"} <= by_metric["gen_ai_client_token_usage_sum"]
    assert "rpc_server_call_duration_seconds_bucket" in by_metric
    assert "gen_ai_client_operation_duration_seconds_bucket" in by_metric
    assert "celgate_outcome" in by_metric["celgate_decisions_total"]
    assert "celgate_enforcement_reason" in by_metric["celgate_enforcement_blocked_total"]
    assert "error_type" in by_metric["gen_ai_client_operation_duration_seconds_count"]
    assert "celgate_tenant" in by_metric["celgate_budget_utilization"]
    quantiles = [e for e in expressions() if e.startswith("histogram_quantile(")]
    assert {q.split(",")[0] for q in quantiles} == {
        "histogram_quantile(0.5",
        "histogram_quantile(0.99",
    }
