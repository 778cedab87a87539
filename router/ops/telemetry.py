"""One router process's /metrics page, assembled from every part.

Theory of operation
-------------------
The request path keeps integers only (router/dataplane/metrics.py: one slot
per route and backend; the data plane's failure counts on failure paths);
everything else on the page is derived here, when Prometheus scrapes. The page
has three parts:

1. *Requests* (`Metrics.request_lines`): the counters and latency histograms
   per route, backend and role, with the other workers' slots added.
2. *This process* (`local_lines`): figures each worker has of its own,
   summed across workers by worker 0 (router/ops/exposition.py `merge`):
   backend failures by reason, requests in flight, mirror sends, drops, failures
   and queues, shadow comparisons per field, delayed labels per arm, rollout
   transitions this process wrote, the metrics' flush, the features' own lines
   (drift, accuracy, automation fallbacks, stream timing, access log) and the
   standard `process_*` families.
3. *The shared state* (`shared_lines`, worker 0's own): build info, the state
   store and config reloads, the controller lease, each route's weights, and
   the rollouts with their gate verdicts (router/ops/rollout_metrics.py).

Roles come from router/ops/roles.py, looked up per series at render time.
Label values are names from config.yaml and words from fixed sets (reasons,
outcomes, phases, gates): never a request id or anything a client sends.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import router
from router.core.analysis import GATES
from router.core.rollout import Rollout
from router.dataplane.metric_text import metric_lines
from router.dataplane.metrics import Metrics
from router.drift.label_items import MICRO
from router.native import data_plane
from router.ops.exposition import merge, parse, render_text
from router.ops.process_metrics import process_lines
from router.ops.roles import Roles, route_weights
from router.ops.rollout_metrics import RolloutFigures, rollout_lines
from router.runtime import Runtime
from router.shadow.totals import MirrorTotals

Rows = list[tuple[dict[str, str], float]]
_WORD = re.compile(r"[a-z][a-z0-9_]{0,31}")


class Lines(Protocol):
    def metric_lines(self) -> list[str]: ...


class Plane(Protocol):
    """What the page reads of the data plane (router/dataplane/proxy.py DataPlane)."""

    failures: dict[tuple[str, str, str], int]

    def in_flight(self) -> dict[str, int]: ...


class MirrorSource(Protocol):
    totals: MirrorTotals
    queue_size: int
    queued_bytes: int

    def queue_depths(self) -> dict[str, int]: ...


class FeedbackSource(Protocol):
    totals: dict[tuple[str, str, str], int]


class Peers(Protocol):
    """The other workers' last local text (router/ops/workers.py), live or not."""

    def peer_local(self) -> list[tuple[bool, str]]: ...


class Telemetry:
    """Renders the page; every source but the runtime and metrics is optional."""

    def __init__(
        self,
        runtime: Runtime,
        metrics: Metrics,
        *,
        extensions: Sequence[Lines] = (),
        plane: Plane | None = None,
        mirrors: MirrorSource | None = None,
        feedback: FeedbackSource | None = None,
        figures: RolloutFigures | None = None,
        is_leader: Callable[[], bool] | None = None,
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.extensions = tuple(extensions)
        self.plane = plane
        self.mirrors = mirrors
        self.feedback = feedback
        self.figures = figures
        self.is_leader = is_leader
        self.peers: Peers | None = None  # --workers N, worker 0 (router/ops/workers.py)
        self.roles = Roles(runtime)
        metrics.role_of = self.roles.role
        # (route, kind, event, cause) -> rollout changes this process wrote
        self.transitions: dict[tuple[str, str, str, str], int] = {}

    # -- the page -----------------------------------------------------------------
    def page(self) -> str:
        """The whole /metrics text (Prometheus text format 0.0.4)."""
        request = self.metrics.request_lines()  # reads the peers' files first
        local = "\n".join(self.local_lines()) + "\n"
        if self.peers is not None:
            others = [(live, parse(text)) for live, text in self.peers.peer_local()]
            local = render_text(merge(parse(local), others).values())
        shared = self.shared_lines()
        return "\n".join(request) + "\n" + local + "\n".join(shared) + "\n"

    def local_lines(self) -> list[str]:
        """This process's own figures (part 2 of the module doc)."""
        role = self.roles.role
        lines = self.metrics.process_lines()
        if self.plane is not None:
            lines += _failure_lines(self.plane.failures, role)
            counts = dict.fromkeys(self.runtime.table.by_name, 0)  # every route, 0 when idle
            counts.update(self.plane.in_flight())
            lines += _in_flight_lines(counts)
        if self.mirrors is not None:
            m = self.mirrors
            lines += m.totals.lines(role, m.queue_depths(), m.queue_size)
            lines += metric_lines(
                "router_mirror_queued_bytes",
                "gauge",
                "Bytes of request and answer copies waiting in every mirror queue.",
                [({}, float(m.queued_bytes))],
            )
        if self.feedback is not None:
            lines += _feedback_lines(self.feedback.totals, role)
        lines += self._transition_lines()
        for ext in self.extensions:
            lines += ext.metric_lines()
        return lines + process_lines()

    def shared_lines(self) -> list[str]:
        """The shared state (part 3 of the module doc)."""
        rt = self.runtime
        build = {"version": router.__version__, "data_plane": data_plane()}
        build["python"] = platform.python_version()
        lines = _one("router_build_info", _BUILD, build, 1)
        lines += _one("router_store_up", "1 when the state store answers.", {}, rt.store_ok)
        restoring = rt.store_notes().get("restoring") or ()
        lines += _one("router_store_restoring_routes", _RESTORING, {}, len(restoring))
        failed = rt.last_reload_error is not None
        lines += _one("router_config_reload_failed", _RELOAD, {}, failed)
        lines += _one("router_config_loaded_timestamp_seconds", _LOADED, {}, rt.loaded_at)
        lines += metric_lines(
            "router_config_reload_refusals_total",
            "counter",
            "Config edits this process refused since it started (the old config kept serving).",
            [({}, rt.reload_refusals)],
        )
        if self.is_leader is not None:
            lines += _one("router_controller_leader", _LEADER, {}, self.is_leader())
        lines += self._weight_lines()
        return lines + rollout_lines(rt, self.figures)

    def _weight_lines(self) -> list[str]:
        rt, role = self.runtime, self.roles.role
        shares: Rows = [
            ({"route": r.name, "backend": b, "role": role(r.name, b)}, share)
            for r in rt.table.by_name.values()
            for b, share in route_weights(r, rt.live.get(r.name)).items()
        ]
        return metric_lines(
            "router_route_weight_percent", "gauge", "Share of a route's requests.", shares
        )

    # -- rollout transitions (router/control/base.py Writer.on_written) --------------
    def count_transitions(
        self, r: Rollout, events: Sequence[Mapping[str, Any]], actor: str | None
    ) -> None:
        for event in events:
            word = str(event.get("event", ""))
            key = (r.route, r.kind, word if _WORD.fullmatch(word) else "other", cause(event, actor))
            self.transitions[key] = self.transitions.get(key, 0) + 1

    def _transition_lines(self) -> list[str]:
        rows: Rows = [
            ({"route": route, "kind": kind, "event": event, "cause": why}, n)
            for (route, kind, event, why), n in sorted(self.transitions.items())
        ]
        return metric_lines(
            "router_rollout_transitions_total",
            "counter",
            "Rollout changes this process wrote, by event (start, advance, promote, abort, "
            "rollback, switch, ...) and cause (the gate that decided, controller, operator).",
            rows,
        )


def cause(event: Mapping[str, Any], actor: str | None) -> str:
    """Why a rollout moved: the gate that decided, else who wrote it (never the actor's
    own words: routerctl lets an operator name themselves)."""
    gate = event.get("gate")
    if isinstance(gate, str) and gate in GATES:
        return gate
    if actor is None:
        return "controller"
    return "config" if actor == "config" else "operator"


def _one(name: str, text: str, labels: dict[str, str], value: float) -> list[str]:
    return metric_lines(name, "gauge", text, [(labels, float(value))])


def _failure_lines(failures: Mapping[tuple[str, str, str], int], role: Any) -> list[str]:
    rows: Rows = [
        ({"route": r, "backend": b, "role": role(r, b), "reason": why}, n)
        for (r, b, why), n in sorted(failures.items())
    ]
    return metric_lines(
        "router_upstream_failures_total",
        "counter",
        "Requests a backend failed, by reason: refused, connect_timeout, tls, unreachable, "
        "reset, invalid, timeout, busy, not_configured, no_answer.",
        rows,
    )


def _in_flight_lines(counts: Mapping[str, int]) -> list[str]:
    rows: Rows = [({"route": r}, n) for r, n in sorted(counts.items())]
    return metric_lines(
        "router_requests_in_flight", "gauge", "Requests received and not answered yet.", rows
    )


_ARM_FIELDS = {
    "n": ("router_feedback_labelled_items_total", "Items (rows) scored against a class label."),
    "ok": ("router_feedback_correct_items_total", "Items whose prediction equalled its label."),
    "rn": ("router_feedback_valued_items_total", "Items scored against a numeric value."),
    "ae_u": ("router_feedback_absolute_error_total", "Sum of |prediction - value| of those."),
}


def _feedback_lines(totals: Mapping[tuple[str, str, str], int], role: Any) -> list[str]:
    """Delayed labels per arm: a served backend (`answer="served"`) or an answer nobody
    was served (`mirror`, `assist`, `deferred`: router/drift/labels.py)."""
    rows: dict[str, Rows] = {field: [] for field in _ARM_FIELDS}
    for (route, arm, field), n in sorted(totals.items()):
        if field not in rows:
            continue
        backend, _, answer = arm.partition("~")
        labels = {"route": route, "backend": backend, "role": role(route, backend)}
        value = n / MICRO if field == "ae_u" else float(n)
        rows[field].append(({**labels, "answer": answer or "served"}, value))
    out: list[str] = []
    for field, (name, text) in _ARM_FIELDS.items():
        out += metric_lines(name, "counter", text, rows[field])
    return out


_BUILD = "1, labelled with the router's version, data plane (compiled or not) and Python."
_RESTORING = "Routes whose state this replica is writing back to a store that lost it."
_RELOAD = "1 while the last config reload was refused (the old config keeps serving)."
_LOADED = "When the config in use was loaded."
_LEADER = "1 on the replica holding the controller lease."
