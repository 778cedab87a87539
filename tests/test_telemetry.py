"""The figures /metrics derives when scraped: roles, rollouts and gates, transitions, in
flight, delayed labels per arm, drift without an empty window's score, the workers' sum."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from router.config.reader import parse
from router.control.base import ANALYSIS_SAMPLE, Writer
from router.core.drift_scores import FeatureScore
from router.core.rollout import Rollout
from router.dataplane.metrics import Metrics
from router.dataplane.routing import build_table
from router.drift.labels import Feedback
from router.drift.streams import RouteDrift
from router.drift.watch import DriftIO
from router.ops.exposition import parse as families
from router.ops.process_metrics import process_lines
from router.ops.roles import Roles
from router.ops.rollout_metrics import RolloutFigures, abort_cause, rollout_lines
from router.ops.telemetry import Telemetry, cause
from router.ops.workers import WorkerCounters
from router.runtime import Runtime
from router.state.live import LiveState
from router.state.memory import MemoryStore
from tests.support.dataplane import RawClient, backend, get, make_runtime, running_plane
from tests.support.rawbackend import RawBackend

CONFIG = """
backends:
  v1: {url: http://127.0.0.1:1}
  v2: {url: http://127.0.0.1:2}
  v3: {url: http://127.0.0.1:3}
routes:
  - name: iris
    match: {path_prefix: /iris}
    strategy:
      canary:
        stable: v1
        candidate: v2
        steps: [{weight: 10, pause: 30s}, {weight: 50, pause: 1m}, {weight: 100}]
  - name: fraud
    match: {path_prefix: /fraud}
    strategy: {bluegreen: {blue: v1, green: v2}}
  - name: scores
    match: {path_prefix: /scores}
    strategy: {shadow: {primary: v1, shadows: [v2], secondary: {backend: v3, percent: 10}}}
  - name: inspect
    match: {path_prefix: /inspect}
    strategy: {automation: {model: v2, human: v1, level: shadow}}
  - name: rest
    match: {path_prefix: /}
    strategy: {split: {weights: {v1: 90, v3: 10}}}
"""


def runtime() -> Runtime:
    config = parse(CONFIG)
    return Runtime(config=config, table=build_table(config))


def samples(lines: list[str], name: str) -> dict[str, float]:
    fam = families("\n".join(lines) + "\n").get(name)
    return {k: float(v) for k, v in fam.samples.items()} if fam is not None else {}


def test_every_strategy_names_its_backends_roles() -> None:
    role = Roles(runtime()).role
    assert (role("iris", "v1"), role("iris", "v2")) == ("stable", "candidate")
    assert (role("fraud", "v1"), role("fraud", "v2")) == ("blue", "green")
    assert [role("scores", b) for b in ("v1", "v2", "v3")] == ["primary", "shadow", "secondary"]
    assert (role("inspect", "v2"), role("inspect", "v1")) == ("model", "human")
    assert (role("rest", "v1"), role("rest", "v3")) == ("split", "split")
    assert role("iris", "v3") == role("gone", "v1") == "none"


def test_a_rollout_reads_as_a_state_set_with_its_step_weight_and_cause() -> None:
    rt = runtime()
    r = Rollout("iris", version=7, kind="canary", phase="aborted", step=1, weight_bp=0)
    rt.live = {"iris": r.evolve(stable="v1", candidate="v2", step_started_at=100.0)}
    figures = RolloutFigures(rt, MemoryStore())
    figures.causes["iris"] = (7, "error_rate")
    lines = rollout_lines(rt, figures)
    phases = samples(lines, "router_rollout_phase")
    assert phases['router_rollout_phase{route="iris",kind="canary",phase="aborted"}'] == 1.0
    assert sum(float(v) for v in phases.values()) == 1.0
    assert len(phases) == 6  # every phase of the canary's table, 0 but the current one
    assert samples(lines, "router_rollout_aborted") == {
        'router_rollout_aborted{route="iris",cause="error_rate"}': 1
    }
    assert samples(lines, "router_rollout_step") == {'router_rollout_step{route="iris"}': 1}
    assert samples(lines, "router_rollout_steps") == {'router_rollout_steps{route="iris"}': 3}
    pause = samples(lines, "router_rollout_step_pause_seconds")
    assert pause == {'router_rollout_step_pause_seconds{route="iris"}': 60.0}
    assert samples(lines, "router_rollout_weight_ratio") == {
        'router_rollout_weight_ratio{route="iris"}': 0.0
    }


def gate(name: str, verdict: str, value: float, n: int) -> dict[str, Any]:
    return {"name": name, "verdict": verdict, "value": value, "threshold": 0.5,
            "candidate_n": n, "baseline_n": 2 * n, "dry_run": name == "latency"}  # fmt: skip


def test_gates_read_their_verdict_and_a_value_only_once_they_have_one() -> None:
    """No sample, or a waiting latency gate's placeholder 0: no value; a waiting error-rate
    gate's 0 increase is a figure."""
    rt = runtime()
    rt.live = {"iris": Rollout("iris", kind="canary", phase="progressing")}
    figures = RolloutFigures(rt, MemoryStore())
    figures.analysis["iris"] = {
        "at": 5.0,
        "gates": [gate("error_rate", "wait", 0.0, 80), gate("latency", "wait", 0.0, 40),
                  gate("agreement", "wait", 0.9, 30), gate("accuracy", "wait", 0.7, 0)],
    }  # fmt: skip
    lines = rollout_lines(rt, figures)
    verdicts = samples(lines, "router_gate_verdict")
    on = {k for k, v in verdicts.items() if v == 1}
    assert on == {
        'router_gate_verdict{route="iris",gate="error_rate",verdict="wait"}',
        'router_gate_verdict{route="iris",gate="latency",verdict="wait"}',
        'router_gate_verdict{route="iris",gate="agreement",verdict="wait"}',
        'router_gate_verdict{route="iris",gate="accuracy",verdict="wait"}',
    }
    assert samples(lines, "router_gate_value") == {
        'router_gate_value{route="iris",gate="error_rate"}': 0.0,
        'router_gate_value{route="iris",gate="agreement"}': 0.9,
    }
    dry = samples(lines, "router_gate_dry_run")
    assert dry['router_gate_dry_run{route="iris",gate="latency"}'] == 1.0
    n = samples(lines, "router_gate_samples")
    assert n['router_gate_samples{route="iris",gate="agreement",arm="baseline"}'] == 60


async def test_the_figures_come_from_the_store_and_follow_the_table() -> None:
    store, rt = MemoryStore(), runtime()
    rt.live = {"iris": Rollout("iris", version=3, kind="canary", phase="aborted")}
    text = json.dumps({"at": 1.0, "gates": [gate("error_rate", "fail", 0.3, 50)]})
    await store.push_sample("iris", ANALYSIS_SAMPLE, text, 1, 60.0)
    await store.add_history("iris", {"event": "start", "phase": "progressing"})
    await store.add_history("iris", {"event": "abort", "phase": "aborted", "gate": "error_rate"})
    figures = RolloutFigures(rt, store)
    await figures.refresh()
    assert figures.analysis["iris"]["gates"][0]["verdict"] == "fail"
    assert figures.causes == {"iris": (3, "error_rate")}
    rt.live = {"iris": Rollout("iris", version=4, kind="canary", phase="progressing")}
    await figures.refresh()
    assert figures.causes == {}  # no longer aborted
    other = parse(CONFIG.replace("name: iris", "name: iris2"))
    rt.swap_config(other, build_table(other))
    await figures.refresh()
    assert figures.analysis == {}  # iris left the config


def test_what_aborted_a_rollout_is_read_from_its_newest_aborted_entry() -> None:
    entries = [{"event": "abort", "phase": "aborted", "gate": "latency"},
               {"event": "retry", "phase": "progressing"},
               {"event": "abort", "phase": "aborted", "actor": "routerctl"},
               {"event": "drift_alarm", "actor": "drift"}]  # fmt: skip
    assert abort_cause(entries) == "operator"
    assert abort_cause(entries[:1]) == "latency"
    assert abort_cause([{"phase": "aborted", "actor": "controller@h:1"}]) == "controller"
    assert abort_cause([]) == "unknown"


def test_a_transition_is_counted_by_event_and_cause_never_by_actor_name() -> None:
    assert cause({"event": "abort", "gate": "error_rate"}, None) == "error_rate"
    assert cause({"event": "advance"}, None) == "controller"
    assert cause({"event": "automation_level"}, "config") == "config"
    assert cause({"event": "rollback"}, "alice from the night shift") == "operator"
    assert cause({"event": "abort", "gate": "$(rm -rf)"}, None) == "controller"


async def test_the_writer_tells_telemetry_what_it_stored() -> None:
    store, rt = MemoryStore(), runtime()
    tel = Telemetry(rt, Metrics())
    writer = Writer(store, LiveState(store, routes=lambda: ["iris"]), actor="controller@t")
    writer.on_written = tel.count_transitions
    r = Rollout("iris", kind="canary", phase="aborted")
    await writer.write(r, 0, [{"event": "abort", "gate": "error_rate"}])
    stored = await store.get_rollout("iris")
    assert stored is not None
    await writer.write(
        stored.evolve(phase="progressing"), stored.version, [{"event": "retry"}], "bob"
    )
    lines = tel.local_lines()
    arm = 'route="iris",kind="canary"'
    assert samples(lines, "router_rollout_transitions_total") == {
        f'router_rollout_transitions_total{{{arm},event="abort",cause="error_rate"}}': 1,
        f'router_rollout_transitions_total{{{arm},event="retry",cause="operator"}}': 1,
    }


async def test_requests_in_flight_are_counted_when_scraped() -> None:
    """A request waiting for its backend is in flight; answered, it is not."""
    release = asyncio.Event()

    async def hold(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await b.next_request(r)
        await release.wait()
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()

    b = await RawBackend(hold).start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            tel = Telemetry(p.runtime, Metrics(), plane=p.plane)
            client = await RawClient.open(p.port)
            await client.send(get())
            for _ in range(200):
                if p.plane.in_flight():
                    break
                await asyncio.sleep(0.01)
            waiting = samples(tel.local_lines(), "router_requests_in_flight")
            release.set()
            assert (await client.head()).status == 200
            await client.close()
            answered = samples(tel.local_lines(), "router_requests_in_flight")
    finally:
        await b.close()
    assert waiting == {'router_requests_in_flight{route="main"}': 1}
    assert answered == {'router_requests_in_flight{route="main"}': 0}


async def test_delayed_labels_are_counted_per_arm() -> None:
    """A label scores every arm that answered the request: the served one and a mirror."""
    store, rt = MemoryStore(), runtime()
    feedback = Feedback(store)
    feedback.remember("rid-1", "scores", "v1", ("setosa",))
    feedback.remember("rid-1", "scores", "v2", ("virginica",), role="mirror")
    await feedback.submit([{"request_id": "rid-1", "label": "setosa"}])
    assert await feedback.poll() == 1
    lines = Telemetry(rt, Metrics(), feedback=feedback).local_lines()
    labelled = samples(lines, "router_feedback_labelled_items_total")
    correct = samples(lines, "router_feedback_correct_items_total")
    served = 'route="scores",backend="v1",role="primary",answer="served"'
    mirror = 'route="scores",backend="v2",role="shadow",answer="mirror"'
    assert labelled == {f"router_feedback_labelled_items_total{{{served}}}": 1.0,
                        f"router_feedback_labelled_items_total{{{mirror}}}": 1.0}  # fmt: skip
    assert correct == {f"router_feedback_correct_items_total{{{served}}}": 1.0,
                       f"router_feedback_correct_items_total{{{mirror}}}": 0.0}  # fmt: skip
    assert samples(feedback.metric_lines(), "router_feedback_received_total") == {
        "router_feedback_received_total": 1.0
    }


def test_an_empty_drift_window_has_its_sample_count_and_no_score() -> None:
    drift = DriftIO(MemoryStore(), step_window=lambda r: None, is_leader=lambda: True)
    rd = RouteDrift.__new__(RouteDrift)
    rd.route, rd.last = "scores", {
        "inputs": [FeatureScore("x", 0.0, 0.0, 0.0, 0, 0.2, False),
                   FeatureScore("y", 0.4, 0.3, 0.2, 600, 0.2, True)],
    }  # fmt: skip
    drift.routes = {"scores": rd}
    lines = drift.metric_lines()
    x = 'route="scores",series="inputs",role="input",feature="x"'
    y = 'route="scores",series="inputs",role="input",feature="y"'
    assert samples(lines, "router_drift_samples") == {
        f"router_drift_samples{{{x}}}": 0.0,
        f"router_drift_samples{{{y}}}": 600.0,
    }
    assert samples(lines, "router_drift_psi") == {f"router_drift_psi{{{y}}}": 0.4}
    assert samples(lines, "router_drift_alarm") == {f"router_drift_alarm{{{y}}}": 1.0}


def test_process_figures_are_read_from_proc() -> None:
    found = samples(process_lines(), "process_cpu_seconds_total")
    assert float(found["process_cpu_seconds_total"]) > 0
    rss = samples(process_lines(), "process_resident_memory_bytes")
    assert float(rss["process_resident_memory_bytes"]) > 1_000_000


class Plane:
    """What the page reads of a data plane, with figures set by the test."""

    def __init__(self, failures: dict[tuple[str, str, str], int], busy: int) -> None:
        self.failures = failures
        self.busy = busy

    def in_flight(self) -> dict[str, int]:
        return {"iris": self.busy}


def test_worker_zero_adds_the_other_workers_figures(tmp_path: Path) -> None:
    """Counters of every worker, the dead one's last file included; in-flight of the live
    ones; shared-state gauges once; every family once on the page."""
    zero: Telemetry | None = None
    for worker, busy in ((0, 1), (1, 2), (2, 5)):
        rt = runtime()
        rt.live = {"iris": Rollout("iris", kind="canary", phase="progressing", step=1)}
        plane = Plane({("iris", "v2", "refused"): worker + 1}, busy)
        tel = Telemetry(rt, Metrics(), plane=plane)
        counters = WorkerCounters(str(tmp_path), worker, tel.metrics)
        counters.local = lambda tel=tel: "\n".join(tel.local_lines()) + "\n"
        counters.write()
        if worker == 0:
            tel.peers = counters
            zero = tel
    WorkerCounters.retire(str(tmp_path), 2, 999)  # worker 2 died; its last figures stay
    assert zero is not None
    page = families(zero.page())
    failures = page["router_upstream_failures_total"].samples
    arm = 'route="iris",backend="v2",role="candidate"'
    key = f'router_upstream_failures_total{{{arm},reason="refused"}}'
    assert {k: float(v) for k, v in failures.items()} == {key: 6}  # 1 + 2 + 3
    in_flight = page["router_requests_in_flight"].samples['router_requests_in_flight{route="iris"}']
    assert float(in_flight) == 3  # the live workers': 1 + 2
    steps = page["router_rollout_step"].samples
    assert {k: float(v) for k, v in steps.items()} == {'router_rollout_step{route="iris"}': 1}
    assert float(page["router_metrics_workers"].samples["router_metrics_workers"]) == 2
    text = zero.page()
    assert len([ln for ln in text.splitlines() if ln.startswith("# TYPE ")]) == len(page)
