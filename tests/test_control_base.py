"""The shared half of the controllers (router/control/base.py) and the machines' tables.

Pure parts on a simulated clock; the controllers on a real MemoryStore (and a
real redis-server where replicas matter: seeding waits for them).
"""

from __future__ import annotations

import pytest

from router.config.reader import parse
from router.control import automation_machine, bluegreen_machine, canary_machine
from router.control.base import (
    CAS_ATTEMPTS,
    KEPT_CHANGING,
    KindBase,
    Reply,
    Writer,
    counted_window,
    window_id,
)
from router.control.canary import CanaryController
from router.control.machine import IllegalMove
from router.core.rollout import Rollout
from router.dataplane.metrics import Metrics
from router.dataplane.routing import CompiledRoute, build_table
from router.state.base import StateStore
from router.state.live import SEED_GRACE, LiveState
from router.state.memory import MemoryStore

CANARY = canary_machine.TABLE
BLUEGREEN = bluegreen_machine.TABLE


# -- the tables ------------------------------------------------------------------------
def test_a_move_the_table_does_not_list_is_refused() -> None:
    """Table.move is the only way to change phase; an unlisted move raises IllegalMove."""
    aborted = Rollout("r", kind="canary", phase="aborted")
    with pytest.raises(IllegalMove, match="passed cannot move aborted to progressing"):
        CANARY.move(aborted, "passed", canary_machine.PROGRESSING)
    steady = Rollout("r", kind="bluegreen", phase="steady")
    with pytest.raises(IllegalMove):
        BLUEGREEN.move(steady, "settled", bluegreen_machine.STEADY)
    moved = BLUEGREEN.move(steady, "switch", bluegreen_machine.WATCHING, revision=2)
    assert (moved.phase, moved.revision, type(moved.phase)) == ("watching", 2, str)


def test_every_operator_verb_is_a_trigger_of_its_table() -> None:
    """A verb an operator may send has a row in the moves table of its kind."""
    for table in (CANARY, BLUEGREEN, automation_machine.TABLE):
        assert set(table.verbs) <= set(table.moves), table.kind
        for trigger, rows in table.moves.items():
            for leave, enter in rows.items():
                assert {leave, *enter} <= set(table.phases), (table.kind, trigger)


def test_one_window_id_for_every_kind() -> None:
    """The id is revision and start in ms, in the phases each table judges; else None."""

    def at(kind: str, phase: str) -> Rollout:
        return Rollout("r", kind=kind, phase=phase, revision=3, step_started_at=7.5)

    assert window_id(at("automation", "running")) == "3-7500"
    assert window_id(at("bluegreen", "watching")) == "3-7500"
    assert window_id(at("bluegreen", "aborted")) is None
    assert window_id(at("split", "running")) is None
    assert window_id(None) is None
    assert counted_window(None) is None
    waiting = at("canary", "waiting")  # shadow first: comparisons judged, no metrics
    assert (window_id(waiting), counted_window(waiting)) == ("3-7500", None)


def test_an_automation_move_keeps_a_rollout_another_strategy_left() -> None:
    """A route switched to automation keeps the old rollout's kind and phase, as before."""
    left = Rollout("r", kind="canary", phase="progressing", extra={"window": "shadow"})
    new, events = automation_machine.relevelled(left, "assist", 5.0)
    assert (new.kind, new.phase, new.step_started_at, new.extra["window"]) == (
        "canary",
        "progressing",
        5.0,
        "assist",
    )
    assert events == [{"event": "automation_level", "from": "shadow", "to": "assist"}]


# -- the base: throttle, command loop, seeding -----------------------------------------------
def base_on(store: StateStore) -> KindBase:
    live = LiveState(store, routes=lambda: ["iris"])
    return KindBase(store, Writer(store, live, actor="controller@test"))


def test_the_leader_judges_a_route_once_per_interval() -> None:
    """due() says yes at most once per interval per route, on the caller's clock."""
    base = base_on(MemoryStore())
    seen = [t for t in (0.0, 0.5, 1.0, 1.4, 2.2, 2.9, 3.2) if base.due("iris", 1.0, t)]
    assert seen == [1.0, 2.2, 3.2]  # 0.0 is within the interval of "never judged" (0.0)
    assert base.due("fraud", 1.0, 1.0)  # each route on its own pace


async def test_the_command_loop_retries_lost_races_then_says_so() -> None:
    """A lost compare-and-set (None) reads again, CAS_ATTEMPTS times, then 409."""
    base = base_on(MemoryStore())
    tries: list[int] = []

    async def always_lost(n: int) -> Reply | None:
        tries.append(n)
        return None

    assert await base.until_written(always_lost) == (409, {"error": KEPT_CHANGING})
    assert tries == list(range(CAS_ATTEMPTS))

    async def third_time(n: int) -> Reply | None:
        return (200, {"message": f"try {n}"}) if n == 2 else None

    assert await base.until_written(third_time) == (200, {"message": "try 2"})


async def test_seeding_waits_until_the_replicas_had_their_chance(store: StateStore) -> None:
    """A route nobody holds is seeded from config.yaml: at once alone (memory), only
    SEED_GRACE after the first ask on a shared store; then it is judged, not seeded."""
    base = base_on(store)
    fresh = Rollout("iris", kind="automation", phase="running", reason="from config.yaml")
    assert await base.judged("iris", 1.0, 100.0, lambda: fresh) is None
    stored = await store.get_rollout("iris")
    if store.shared:
        assert stored is None
        assert await base.judged("iris", 1.0, 100.0 + SEED_GRACE / 2, lambda: fresh) is None
        assert await store.get_rollout("iris") is None
        await base.judged("iris", 1.0, 100.0 + SEED_GRACE, lambda: fresh)
        stored = await store.get_rollout("iris")
    assert stored is not None
    assert stored.version == 1
    history = await store.history("iris", 10)
    assert [(e["event"], e["reason"], e["actor"]) for e in history] == [
        ("start", "from config.yaml", "controller@test")
    ]
    judged = await base.judged("iris", 1.0, 200.0, lambda: fresh)
    assert judged is not None
    assert judged.version == 1


# -- the fast path, on a canary ------------------------------------------------------------
def canary_rig(shadow_first: bool) -> tuple[CanaryController, CompiledRoute, Metrics, MemoryStore]:
    first = "        shadow_first: {field: $.label, min_requests: 10}\n" if shadow_first else ""
    config = parse(
        "backends:\n  v1: {url: http://127.0.0.1:9}\n  v2: {url: http://127.0.0.1:9}\n"
        "routes:\n  - name: iris\n    match: {path_prefix: /}\n    strategy:\n"
        "      canary:\n        stable: v1\n        candidate: v2\n"
        "        steps: [{weight: 50, pause: 1h}, {weight: 100}]\n"
        "        analysis: {error_rate: {}}\n" + first
    )
    store, metrics = MemoryStore(), Metrics()
    live = LiveState(store, routes=lambda: ["iris"])
    ctl = CanaryController(store, live, metrics, Writer(store, live, actor="controller@test"))
    return ctl, build_table(config).by_name["iris"], metrics, store


def serve(metrics: Metrics, backend: str, n: int, status: int) -> None:
    for _ in range(n):
        metrics.record("iris", backend, status, 0.01, "active", "", 0)


async def test_a_replica_aborts_a_canary_on_its_own_counts() -> None:
    """Errors counted since this replica saw the step abort it at once, with the evidence
    named; errors from before it saw the step do not count."""
    ctl, route, metrics, store = canary_rig(shadow_first=False)
    await ctl.tick(route, 1000.0)
    serve(metrics, "v2", 20, 500)  # before the fast path saw the window: its baseline
    serve(metrics, "v1", 20, 200)
    await ctl.watch(route, 1000.2)
    serve(metrics, "v1", 20, 200)
    await ctl.watch(route, 1000.4)
    assert (await store.get_rollout("iris")).phase == "progressing"  # type: ignore[union-attr]
    serve(metrics, "v2", 20, 500)
    await ctl.watch(route, 1000.6)
    r = await store.get_rollout("iris")
    assert r is not None
    assert (r.phase, r.weight_bp) == ("aborted", 0)
    last = (await store.history("iris", 10))[-1]
    assert (last["event"], last["evidence"]) == ("abort", "local counts of one replica")
    assert last["reason"] == r.reason
    assert r.reason.startswith("aborted: error_rate gate failed")


async def test_shadow_first_has_no_fast_path() -> None:
    """No user reaches the candidate in shadow first: local counts never abort it."""
    ctl, route, metrics, store = canary_rig(shadow_first=True)
    await ctl.tick(route, 1000.0)
    await ctl.watch(route, 1000.2)
    serve(metrics, "v2", 50, 500)
    await ctl.watch(route, 1000.4)
    r = await store.get_rollout("iris")
    assert r is not None
    assert r.phase == "waiting"
