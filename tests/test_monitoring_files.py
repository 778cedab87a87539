"""The monitoring files made from code are current, sound, and name only real metrics.

- deploy/grafana/deploy-router.json and the Kubernetes PrometheusRule are what
  `python -m scripts.monitoring` makes (so the rules file and the operator's
  copy, rendered through kustomize, say the same);
- the dashboard model is sound for Grafana: unique ids, panels on the 24-column
  grid without overlaps, every query on the `$datasource` variable, a route
  variable;
- every metric a panel or a rule reads is one the router exports (or a recorded
  series, or Prometheus's `up`): a typo fails here, without a Prometheus. That
  each returns data is tests/test_monitoring_e2e.py's business.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from router.config.reader import parse
from router.ops.exposition import parse as families
from router.wiring import Parts
from scripts import monitoring
from scripts.dashboard import build, queries
from scripts.grafana import DS
from tests.support.manifests import find, render

ROOT = Path(__file__).resolve().parent.parent
PROMQL_WORDS = {
    "sum", "max", "min", "by", "on", "and", "or", "rate", "increase", "histogram_quantile",
    "group", "le", "vector", "bool", "without", "ignoring", "group_left", "time", "changes",
}  # fmt: skip
SUFFIXES = ("_bucket", "_sum", "_count")


def exported() -> set[str]:
    """Every family the router renders for the demo config (every feature is on)."""
    config = parse((ROOT / "config.yaml").read_bytes(), source="config.yaml")
    page = Parts("config.yaml", config, worker=0, reuse_port=False).telemetry.page()
    names = set(families(page))
    return names | {n + s for n in names for s in SUFFIXES}


def recorded() -> set[str]:
    groups = yaml.safe_load(monitoring.RULES.read_text())["groups"]
    return {r["record"] for g in groups for r in g["rules"] if "record" in r}


def metric_names(expr: str) -> set[str]:
    """Metric names in PromQL: identifiers followed by a selector, range or operator,
    not inside label matchers or strings."""
    bare = re.sub(r'"[^"]*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", "{}", bare)
    bare = re.sub(r"\[[^\]]*\]", "[]", bare)  # ranges: [1m], [$__rate_interval]
    bare = re.sub(r"\b(by|on|without|ignoring|group_left)\s*\([^)]*\)", "", bare)
    return {m for m in re.findall(r"\b[a-z_][a-z0-9_:]*\b", bare) if _metric(m)}


def _metric(word: str) -> bool:
    return word not in PROMQL_WORDS and ("_" in word or ":" in word or word == "up")


def test_the_generated_files_are_current() -> None:
    assert monitoring.main(["--check"]) == 0


def test_the_operator_gets_the_same_rules_through_kustomize() -> None:
    (rule,) = find(render("overlays/production"), "PrometheusRule", "deploy-router")
    assert rule["spec"]["groups"] == yaml.safe_load(monitoring.RULES.read_text())["groups"]


def test_the_dashboard_model_is_sound() -> None:
    model = build()
    panels = model["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["datasource"] == DS
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"], p["title"]
        assert len(refs) == len(set(refs)), p["title"]
        assert all(t["datasource"] == DS and t["expr"].strip() for t in p["targets"])
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert "route" in variables["route"]["definition"]
    assert any("router_rollout_updated" in a.get("expr", "") for a in model["annotations"]["list"])


def test_the_dashboard_pairs_each_arm_panel_by_panel() -> None:
    titles = [p["title"] for p in build()["panels"]]
    left = [t.split(" — ")[0] for t in titles if t.endswith("— stable / primary / blue")]
    right = [t.split(" — ")[0] for t in titles if t.endswith("— candidate / shadow / green")]
    assert left == right
    assert {"Requests", "Error ratio", "Latency p50 / p99"} <= set(left)


def test_every_metric_a_panel_or_rule_reads_exists() -> None:
    known = exported() | recorded() | {"up"}
    exprs: list[tuple[str, str]] = list(queries(build()))
    groups: list[dict[str, Any]] = yaml.safe_load(monitoring.RULES.read_text())["groups"]
    exprs += [(r.get("alert") or r["record"], r["expr"]) for g in groups for r in g["rules"]]
    unknown = {(where, name) for where, e in exprs for name in metric_names(e) - known}
    assert not unknown, sorted(unknown)
    assert metric_names('sum by (route) (rate(router_requests_total{a="b"}[1m]))') == {
        "router_requests_total"
    }
