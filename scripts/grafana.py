"""Grafana's dashboard JSON model from plain panel definitions (scripts/dashboard.py).

A `Panel` is a title, its PromQL targets with legends, a type, a unit and a
width; `model` lays sections of panels out on Grafana's 24-column grid, one
row per section, left to right, wrapping at the edge, every query on the
`$datasource` variable, with a `route` variable (all routes by default).
`queries` lists every expression of a model, for the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

DS: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}


@dataclass
class Panel:
    title: str
    targets: list[tuple[str, str]]  # (PromQL, legend)
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 8
    height: int = 8
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)


def _panel_json(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
        for i, (expr, legend) in enumerate(p.targets)
    ]
    out: dict[str, Any] = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "datasource": DS,
        "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
        "options": p.options,
    }
    if p.description:
        out["description"] = p.description
    return out


Sections = Sequence[tuple[str, Callable[[], list[Panel]]]]


def panels(sections: Sections) -> list[dict[str, Any]]:
    """Rows and their panels, laid out left to right on Grafana's 24-column grid."""
    out: list[dict[str, Any]] = []
    y, pid = 0, 1
    for title, make in sections:
        row = {"id": pid, "type": "row", "title": title, "collapsed": False, "panels": []}
        out.append({**row, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        pid, y, x, tallest = pid + 1, y + 1, 0, 0
        for p in make():
            if x + p.width > 24:
                y, x, tallest = y + tallest, 0, 0
            out.append(_panel_json(p, pid, x, y))
            pid, x, tallest = pid + 1, x + p.width, max(tallest, p.height)
        y += tallest
    return out


def _variables() -> list[dict[str, Any]]:
    routes = "label_values(router_route_weight_percent, route)"
    return [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        },
        {
            "name": "route",
            "label": "Route",
            "type": "query",
            "datasource": DS,
            "definition": routes,
            "query": {"query": routes, "refId": "routes"},
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"text": "All", "value": "$__all"},
            "sort": 1,
            "hide": 0,
        },
    ]


def model(
    uid: str, title: str, sections: Sections, annotations: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": "Rollouts, both arms side by side, shadows, drift, mirrors, health.",
        "tags": [uid],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "templating": {"list": _variables()},
        "annotations": {"list": annotations},
        "panels": panels(sections),
    }


def queries(model: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and annotation of a dashboard model."""
    out = [
        (f"panel {p['title']!r}", t["expr"]) for p in model["panels"] for t in p.get("targets", [])
    ]
    out += [
        (f"annotation {a['name']!r}", a["expr"])
        for a in model["annotations"]["list"]
        if "expr" in a
    ]
    return out
