"""The Grafana dashboard of deploy-router, as code: `build()` returns its JSON model.

`python -m scripts.monitoring` writes it to deploy/grafana/deploy-router.json;
tests check the file is what this code builds, that the model is sound (ids,
grid, datasource, variables) and, against a real Prometheus scraping a real
router, that every query returns data (tests/test_monitoring_e2e.py).

Layout: the rollout (phase, weight, step, gate verdicts and values, what aborted
it; every transition is an annotation), then the two arms side by side, the
baseline (stable, primary, blue) on the left and the new one (candidate,
shadow, green) on the right, panel by panel: request rate, error ratio, p50 and
p99, prediction drift, accuracy from delayed labels; then shadow agreement and
input drift, mirror health, backend failures, the state store and reloads, and
the processes.
"""

from __future__ import annotations

from typing import Any

from scripts.grafana import DS, Panel, model
from scripts.grafana import queries as queries  # the tests read a model's queries from here

ROUTE = 'route=~"$route"'
JOB = 'job=~"(.+/)?deploy-router"'
BASE = "stable|primary|blue"
NEW = "candidate|shadow|green"
RATE = "$__rate_interval"
ARM = "route, backend, role"


def _rate(metric: str, where: str, by: str = ARM) -> str:
    return f"sum by ({by}) (rate({metric}{{{where}}}[{RATE}]))"


def _ratio(num: str, den: str, where: str, by: str = ARM) -> str:
    return f"{_rate(num, where, by)}\n  / {_rate(den, where, by)}"


def _quantile(q: float, where: str) -> str:
    inner = _rate("router_request_duration_seconds_bucket", where, f"{ARM}, le")
    return f"histogram_quantile({q}, {inner})"


def rollout_panels() -> list[Panel]:
    return [
        Panel(
            "Phase",
            [(f"max by (route, phase) (router_rollout_phase{{{ROUTE}}}) == 1", "{{route}}")],
            kind="state-timeline",
            width=12,
            description="The rollout's phase over time (router_rollout_phase).",
        ),
        Panel(
            "Candidate weight",
            [
                (f"max by (route) (router_rollout_weight_ratio{{{ROUTE}}})", "{{route}} candidate"),
                (
                    f"max by ({ARM}) (router_route_weight_percent{{{ROUTE}}}) / 100",
                    "{{route}} {{role}} {{backend}}",
                ),
            ],
            unit="percentunit",
            width=12,
        ),
        Panel(
            "Step",
            [
                (f"max by (route) (router_rollout_step{{{ROUTE}}}) + 1", "{{route}} step"),
                (f"max by (route) (router_rollout_steps{{{ROUTE}}})", "{{route}} of"),
            ],
            width=6,
        ),
        Panel(
            "Gate verdicts",
            [
                (
                    f"max by (route, gate, verdict) (router_gate_verdict{{{ROUTE}}}) == 1",
                    "{{route}} {{gate}}: {{verdict}}",
                )
            ],
            kind="state-timeline",
            width=10,
        ),
        Panel(
            "Aborted by",
            [
                (
                    f"max by (route, cause) (router_rollout_aborted{{{ROUTE}}})",
                    "{{route}}: {{cause}}",
                )
            ],
            kind="table",
            width=8,
            description="While a rollout is aborted: the gate that failed, or operator.",
        ),
        Panel(
            "Gate values and thresholds",
            [
                (f"max by (route, gate) (router_gate_value{{{ROUTE}}})", "{{route}} {{gate}}"),
                (
                    f"max by (route, gate) (router_gate_threshold{{{ROUTE}}})",
                    "{{route}} {{gate}} threshold",
                ),
            ],
            width=12,
        ),
        Panel(
            "Transitions",
            [
                (
                    f"sum by (route, event, cause) (router_rollout_transitions_total{{{ROUTE}}})",
                    "{{route}} {{event}} ({{cause}})",
                )
            ],
            width=12,
            description="Rollout changes written, counted since each replica started: each "
            "step up is one transition. (A counter's first increment is invisible to "
            "increase(), so the annotations use the rollout's own timestamp.)",
        ),
    ]


def _arm_pair(title: str, make: Any, unit: str = "short") -> list[Panel]:
    """One panel per arm, left the baseline, right the new one."""
    return [
        Panel(f"{title} — stable / primary / blue", make(BASE), unit=unit, width=12),
        Panel(f"{title} — candidate / shadow / green", make(NEW), unit=unit, width=12),
    ]


def arm_panels() -> list[Panel]:
    def where(roles: str) -> str:
        return f'{ROUTE}, role=~"{roles}"'

    def requests(roles: str) -> list[tuple[str, str]]:
        return [(_rate("router_requests_total", where(roles)), "{{route}} {{backend}}")]

    def errors(roles: str) -> list[tuple[str, str]]:
        expr = _ratio("router_request_errors_total", "router_requests_total", where(roles))
        return [(expr, "{{route}} {{backend}}")]

    def latency(roles: str) -> list[tuple[str, str]]:
        return [
            (_quantile(0.5, where(roles)), "{{route}} {{backend}} p50"),
            (_quantile(0.99, where(roles)), "{{route}} {{backend}} p99"),
        ]

    def drift(roles: str) -> list[tuple[str, str]]:
        expr = f"max by (route, series, feature) (router_drift_psi{{{where(roles)}}})"
        return [(expr, "{{route}} {{series}} {{feature}}")]

    def accuracy(roles: str) -> list[tuple[str, str]]:
        num, den = "router_feedback_correct_items_total", "router_feedback_labelled_items_total"
        expr = _ratio(num, den, where(roles), "route, backend, answer")
        return [(expr, "{{route}} {{backend}} ({{answer}})")]

    return [
        *_arm_pair("Requests", requests, "reqps"),
        *_arm_pair("Error ratio", errors, "percentunit"),
        *_arm_pair("Latency p50 / p99", latency, "s"),
        *_arm_pair("Prediction drift (PSI)", drift),
        *_arm_pair("Accuracy (delayed labels)", accuracy, "percentunit"),
    ]


def shadow_panels() -> list[Panel]:
    agree = _ratio(
        "router_shadow_items_agreed_total",
        "router_shadow_items_compared_total",
        ROUTE,
        f"{ARM}, field",
    )
    outcomes = _rate("router_shadow_comparisons_total", ROUTE, "route, backend, outcome")
    psi = f'max by (route, feature) (router_drift_psi{{{ROUTE}, role="input"}})'
    samples = f"max by (route, series, feature) (router_drift_samples{{{ROUTE}}})"
    return [
        Panel(
            "Shadow agreement per field",
            [(agree, "{{route}} {{backend}} {{field}}")],
            unit="percentunit",
            width=12,
            description="Items agreeing with the primary's answer / items compared.",
        ),
        Panel(
            "Comparisons by outcome", [(outcomes, "{{route}} {{backend}} {{outcome}}")], width=12
        ),
        Panel("Input drift (PSI) per feature", [(psi, "{{route}} {{feature}}")], width=12),
        Panel(
            "Drift samples per feature",
            [(samples, "{{route}} {{series}} {{feature}}")],
            width=12,
            description="Values in the current window; no PSI is shown for an empty one.",
        ),
    ]


def mirror_panels() -> list[Panel]:
    by = "route, backend, reason"
    return [
        Panel(
            "Copies sent",
            [(_rate("router_mirror_sent_total", ROUTE, "route, backend"), "{{route}} {{backend}}")],
            unit="reqps",
        ),
        Panel(
            "Copies dropped, by reason",
            [(_rate("router_mirror_dropped_total", ROUTE, by), "{{backend}} {{reason}}")],
            unit="reqps",
        ),
        Panel(
            "Copies failed, by reason",
            [(_rate("router_mirror_failed_total", ROUTE, by), "{{backend}} {{reason}}")],
            unit="reqps",
        ),
        Panel(
            "Mirror queue",
            [
                ("sum by (backend) (router_mirror_queue_depth)", "{{backend}}"),
                ("max(router_mirror_queue_capacity)", "capacity"),
            ],
            width=12,
        ),
        Panel(
            "Mirror queued bytes",
            [("sum by (instance) (router_mirror_queued_bytes)", "{{instance}}")],
            unit="bytes",
            width=12,
        ),
    ]


def backend_panels() -> list[Panel]:
    by = "route, backend, reason"
    return [
        Panel(
            "Backend failures, by reason",
            [(_rate("router_upstream_failures_total", ROUTE, by), "{{backend}} {{reason}}")],
            unit="reqps",
        ),
        Panel(
            "Requests in flight",
            [(f"sum by (route) (router_requests_in_flight{{{ROUTE}}})", "{{route}}")],
        ),
        Panel(
            "Unrouted and rejected requests",
            [
                (_rate("router_unrouted_requests_total", "", "code"), "no route {{code}}"),
                (
                    _rate("router_rejected_requests_total", ROUTE, "route, code"),
                    "{{route}} {{code}}",
                ),
            ],
            unit="reqps",
        ),
    ]


def health_panels() -> list[Panel]:
    return [
        Panel("State store up", [("min by (instance) (router_store_up)", "{{instance}}")], width=6),
        Panel(
            "Metrics flush",
            [
                (
                    _rate("router_metrics_flush_failures_total", "", "instance"),
                    "{{instance}} failures",
                ),
                ("sum by (instance) (router_metrics_pending_windows)", "{{instance}} pending"),
                (_rate("router_metrics_dropped_total", "", "instance"), "{{instance}} dropped"),
            ],
            width=6,
        ),
        Panel(
            "Config reloads",
            [
                ("max by (instance) (router_config_reload_failed)", "{{instance}} refused now"),
                (
                    f"sum by (instance) (increase(router_config_reload_refusals_total[{RATE}]))",
                    "{{instance}} refusals",
                ),
            ],
            width=6,
        ),
        Panel(
            "Controller lease and restores",
            [
                ("max by (instance) (router_controller_leader)", "{{instance}} leader"),
                ("sum by (instance) (router_store_restoring_routes)", "{{instance}} restoring"),
            ],
            width=6,
        ),
    ]


def process_panels() -> list[Panel]:
    return [
        Panel(
            "CPU",
            [(_rate("process_cpu_seconds_total", JOB, "instance"), "{{instance}}")],
            unit="percentunit",
        ),
        Panel(
            "Resident memory",
            [(f"sum by (instance) (process_resident_memory_bytes{{{JOB}}})", "{{instance}}")],
            unit="bytes",
        ),
        Panel(
            "Targets and builds",
            [
                (f"up{{{JOB}}}", "{{instance}} up"),
                (
                    "max by (instance, version, data_plane, python) (router_build_info)",
                    "{{instance}} {{version}} {{data_plane}}",
                ),
            ],
            kind="table",
        ),
    ]


SECTIONS: list[tuple[str, Any]] = [
    ("Rollout", rollout_panels),
    ("Stable vs candidate", arm_panels),
    ("Shadow agreement and drift", shadow_panels),
    ("Mirror health", mirror_panels),
    ("Backends", backend_panels),
    ("State store and config", health_panels),
    ("Processes", process_panels),
]


def _annotations() -> list[dict[str, Any]]:
    # every change of a rollout moves its updated timestamp: a gauge, so the first change
    # of a route shows too (a brand-new counter series has no increase to show)
    expr = (
        "max by (route, phase) (\n"
        f"  (changes(router_rollout_updated_timestamp_seconds{{{ROUTE}}}[1m]) > 0)\n"
        "  * on (route, instance) group_left (phase) (router_rollout_phase == 1)\n)"
    )
    return [
        {
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        },
        {
            "datasource": DS,
            "enable": True,
            "expr": expr,
            "iconColor": "orange",
            "name": "Rollout changes",
            "step": "30s",
            "titleFormat": "{{route}}: {{phase}}",
            "textFormat": "now {{phase}} (routerctl history {{route}} says why)",
            "tagKeys": "route,phase",
            "useValueForTime": False,
        },
    ]


def build() -> dict[str, Any]:
    return model("deploy-router", "deploy-router", SECTIONS, _annotations())
