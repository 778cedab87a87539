"""Blue/green: the strategy's parsing and decisions, and its controller on a MemoryStore.

The controller tests use real aiohttp backends on loopback for the health and
smoke checks, and a simulated clock (every call gets `now`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from router.config.reader import parse
from router.control.base import Writer, counted_window, window_id
from router.control.bluegreen import BlueGreenController
from router.control.bluegreen_machine import ABORTED, ROLLED_BACK, STEADY, WATCHING
from router.core.confkit import ConfigError
from router.core.rollout import Rollout
from router.dataplane.metrics import Metrics
from router.dataplane.routing import CompiledRoute, build_table
from router.runtime import Runtime
from router.state.live import LiveState
from router.state.memory import MemoryStore
from strategies.bluegreen import BlueGreen, BlueGreenSpec
from tests.support.backends import NamedBackend, named_backends

T0 = 1_000_000.0  # simulated epoch seconds


def config_yaml(blue_url: str, green_url: str, **block: Any) -> str:
    strategy = {"blue": "fb", "green": "fg", "active": "blue", **block}
    doc = {
        "backends": {
            "fb": {"url": blue_url, "health": "/health"},
            "fg": {"url": green_url, "health": "/health"},
        },
        "routes": [{"name": "fraud", "match": {"path_prefix": "/"}, "strategy": {}}],
    }
    doc["routes"][0]["strategy"] = {"bluegreen": strategy}  # type: ignore[index]
    return yaml.safe_dump(doc)


def strategy_of(text: str) -> BlueGreen:
    route = build_table(parse(text)).by_name["fraud"]
    assert isinstance(route.strategy, BlueGreen)
    return route.strategy


def live(active: str, phase: str = STEADY, kind: str = "bluegreen") -> Rollout:
    return Rollout("fraud", version=3, kind=kind, phase=phase, active=active)


# -- the strategy ------------------------------------------------------------------
def test_parses_every_key_of_the_block() -> None:
    """The brief's YAML block parses into the spec, header lower case, watch gates read."""
    text = config_yaml(
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        active="green",
        preview_header="X-Try",
        smoke=[{"method": "POST", "path": "/predict", "body": "{}", "expect_status": 201}],
        watch={"window": "30s", "baseline": "2m", "error_rate": {}, "latency": {}},
    )
    spec = strategy_of(text).spec
    assert (spec.blue, spec.green, spec.active, spec.preview_header) == (
        "fb",
        "fg",
        "green",
        "x-try",
    )
    assert spec.smoke[0].method == "POST"
    assert spec.smoke[0].expect_status == 201
    assert (spec.watch.window, spec.watch.baseline) == (30.0, 120.0)
    assert [g.name for g in spec.watch.analysis.gates] == ["error_rate", "latency"]


def test_bad_blocks_name_the_exact_path() -> None:
    """Each mistake is reported with its path; unknown gates and keys are errors."""
    text = config_yaml(
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        green="fb",
        active="red",
        smoke=[{"path": "predict"}],
        watch={"window": "2h", "bogus": {}},
        extra=1,
    )
    with pytest.raises(ConfigError) as err:
        parse(text)
    joined = "\n".join(err.value.errors)
    prefix = "routes[0].strategy.bluegreen"
    assert f"{prefix}.green: must differ from blue" in joined
    assert f"{prefix}.active: must be one of blue, green" in joined
    assert f"{prefix}.smoke[0].path: must be a path starting with /" in joined
    assert f"{prefix}.watch.window: must be at most 1h" in joined
    assert f"{prefix}.watch.bogus: unknown gate" in joined
    assert f"{prefix}.extra: unknown key" in joined


def test_decides_the_active_colour_and_previews_the_idle_one() -> None:
    """Config's colour until the store has one; the store's after; X-Preview: 1 -> idle."""
    bg = strategy_of(config_yaml("http://127.0.0.1:1", "http://127.0.0.1:2"))
    assert bg.override_header == b"x-preview"
    assert bg.decide(7, None, None).primary == "fb"
    assert bg.decide(7, live("green"), None).primary == "fg"
    assert bg.decide(7, live("green"), None).reason == "active"
    preview = bg.decide(7, live("green"), b"1")
    assert (preview.primary, preview.reason) == ("fb", "preview")
    assert bg.decide(7, live("green"), b"0").primary == "fg"
    assert bg.decide(7, live("green", kind="canary"), None).primary == "fb"
    assert bg.weights(live("green")) == {"fb": 0.0, "fg": 100.0}


def test_window_id_is_the_canary_step_window_and_the_bluegreen_watch() -> None:
    """The one window id: a canary's ramp (metrics: not in shadow first); blue/green: watching."""
    counted = ("progressing", "paused", "waiting_for_data")
    for phase in ("waiting", "progressing", "paused", "waiting_for_data", "promoted", "aborted"):
        r = Rollout("r", kind="canary", phase=phase, revision=4, step_started_at=12.5)
        assert counted_window(r) == ("4-12500" if phase in counted else None)
        assert window_id(r) == ("4-12500" if phase in (*counted, "waiting") else None)
    watching = Rollout("r", kind="bluegreen", phase=WATCHING, revision=2, step_started_at=3.25)
    assert window_id(watching) == "2-3250"
    assert window_id(watching.evolve(phase=STEADY)) is None


# -- the controller on a MemoryStore -----------------------------------------------
@dataclass
class Rig:
    store: MemoryStore
    metrics: Metrics
    live: LiveState
    ctl: BlueGreenController
    route: CompiledRoute
    runtime: Runtime
    blue: NamedBackend
    green: NamedBackend

    async def rollout(self) -> Rollout:
        r = await self.store.get_rollout("fraud")
        assert r is not None
        return r

    async def events(self) -> list[dict[str, Any]]:
        return await self.store.history("fraud", 100)

    def serve(self, backend: str, n: int, status: int = 200, seconds: float = 0.01) -> None:
        for _ in range(n):
            self.metrics.record("fraud", backend, status, seconds, "active", "", 0)

    async def flush(self, now: float) -> None:
        assert await self.metrics.flush(self.store, now)


async def make_rig(**block: Any) -> AsyncIterator[Rig]:
    async with named_backends("blue", "green") as nb:
        text = config_yaml(nb["blue"].url, nb["green"].url, **block)
        config = parse(text)
        runtime = Runtime(config=config, table=build_table(config))
        store, metrics = MemoryStore(), Metrics()
        live = LiveState(store, routes=lambda: ["fraud"])
        metrics.step_window = lambda route: counted_window(live.snapshot.get(route))
        writer = Writer(store, live, actor="controller@test")
        ctl = BlueGreenController(runtime, store, live, metrics, writer)
        route = runtime.table.by_name["fraud"]
        yield Rig(store, metrics, live, ctl, route, runtime, nb["blue"], nb["green"])


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async for made in make_rig(watch={"window": "30s", "interval": "1s", "error_rate": {}}):
        yield made


async def test_first_tick_stores_the_configured_colour(rig: Rig) -> None:
    """With nothing stored, the leader writes a steady rollout on config's colour."""
    await rig.ctl.tick(rig.route, T0)
    r = await rig.rollout()
    assert (r.kind, r.phase, r.active, r.stable) == ("bluegreen", STEADY, "blue", "fb")
    assert [e["event"] for e in await rig.events()] == ["start"]


async def test_switch_refused_when_the_idle_colour_is_unhealthy(rig: Rig) -> None:
    """Green's health path answering 503: 409 naming the check, and nothing stored."""
    await rig.ctl.tick(rig.route, T0)
    rig.green.status = 503
    code, body = await rig.ctl.command(rig.route, "switch", {"actor": "routerctl"}, T0 + 1)
    assert code == 409
    assert "health check GET /health failed: status 503" in body["error"]
    assert (await rig.rollout()).version == 1
    assert rig.live.snapshot["fraud"].active == "blue"
    assert [e["event"] for e in await rig.events()] == ["start"]


async def test_switch_refused_when_a_smoke_request_fails() -> None:
    """A smoke request answered with the wrong status refuses the switch; force overrides."""
    smoke = [{"path": "/predict", "expect_status": 201}]
    async for rig in make_rig(smoke=smoke):
        code, body = await rig.ctl.command(rig.route, "switch", {}, T0)
        assert code == 409
        assert "smoke GET /predict: status 200, want 201" in body["error"]
        assert await rig.store.get_rollout("fraud") is None
        code, body = await rig.ctl.command(rig.route, "switch", {"force": True}, T0)
        assert code == 200
        assert body["rollout"]["active"] == "green"
        assert "forced" in body["message"]


async def test_switch_moves_every_request_and_records_who(rig: Rig) -> None:
    """A checked switch is one write: the snapshot flips, watch opens, history names the user."""
    await rig.ctl.tick(rig.route, T0)
    body = {"actor": "routerctl", "user": "alice"}
    code, answer = await rig.ctl.command(rig.route, "switch", body, T0 + 1)
    assert code == 200, answer
    r = rig.live.snapshot["fraud"]
    assert (r.active, r.phase, r.stable, r.revision) == ("green", WATCHING, "fg", 2)
    assert rig.route.decide([], "", rig.live.snapshot).primary == "fg"
    switch = (await rig.events())[-1]
    assert (switch["event"], switch["from"], switch["to"]) == ("switch", "blue", "green")
    assert switch["actor"] == "routerctl (alice)"


async def test_rollback_is_instant_and_pressing_it_twice_stays_back(rig: Rig) -> None:
    """Rollback needs no check, returns to blue; again is a no-op; with no switch it refuses."""
    code, _ = await rig.ctl.command(rig.route, "rollback", {}, T0)
    assert code == 409
    await rig.ctl.command(rig.route, "switch", {}, T0)
    rig.blue.status = 503  # a rollback never waits on a check
    code, answer = await rig.ctl.command(rig.route, "rollback", {"actor": "routerctl"}, T0 + 2)
    assert code == 200, answer
    r = await rig.rollout()
    assert (r.active, r.phase) == ("blue", ROLLED_BACK)
    code, answer = await rig.ctl.command(rig.route, "rollback", {}, T0 + 3)
    assert code == 200
    assert answer["message"].startswith("nothing to do")
    assert (await rig.rollout()).active == "blue"
    events = [e["event"] for e in await rig.events()]
    assert events == ["switch", "rollback"]


async def test_failing_new_colour_is_switched_back_by_the_leader(rig: Rig) -> None:
    """Green answering 500 after the switch fails the error gate against blue's figures before."""
    rig.serve("fb", 400)
    await rig.flush(T0)
    await rig.ctl.command(rig.route, "switch", {}, T0 + 1)
    rig.serve("fg", 30, status=500)
    await rig.flush(T0 + 2)
    await rig.ctl.tick(rig.route, T0 + 3)
    r = await rig.rollout()
    assert (r.active, r.phase) == ("blue", ABORTED)
    last = (await rig.events())[-1]
    assert last["event"] == "auto_rollback"
    assert last["gate"] == "error_rate"
    assert "30/30 errors" in last["reason"]


async def test_healthy_new_colour_settles_when_the_window_ends(rig: Rig) -> None:
    """Green as good as blue: still watching inside the window, steady after it."""
    rig.serve("fb", 400)
    await rig.flush(T0)
    await rig.ctl.command(rig.route, "switch", {}, T0 + 1)
    rig.serve("fg", 400)
    await rig.flush(T0 + 2)
    await rig.ctl.tick(rig.route, T0 + 3)
    assert (await rig.rollout()).phase == WATCHING
    await rig.ctl.tick(rig.route, T0 + 40)
    r = await rig.rollout()
    assert (r.active, r.phase) == ("green", STEADY)
    assert (await rig.events())[-1]["event"] == "watch_passed"


async def test_a_replica_switches_back_on_its_own_counts(rig: Rig) -> None:
    """The fast path: local errors of the new colour switch back with no flush and no leader."""
    rig.serve("fb", 400)
    await rig.ctl.command(rig.route, "switch", {}, T0)
    await rig.ctl.watch(rig.route, T0 + 0.2)  # sees the switch: counts from here
    assert (await rig.rollout()).active == "green"
    rig.serve("fg", 10, status=500)
    await rig.ctl.watch(rig.route, T0 + 0.4)
    r = await rig.rollout()
    assert (r.active, r.phase) == ("blue", ABORTED)
    assert (await rig.events())[-1]["evidence"] == "local counts of one replica"


async def test_leader_follows_a_colour_redeployed_in_config(rig: Rig) -> None:
    """Renaming green's backend in config.yaml is recorded; the stored colour stays."""
    await rig.ctl.tick(rig.route, T0)
    await rig.ctl.command(rig.route, "switch", {}, T0 + 1)
    spec = rig.route.strategy.spec  # type: ignore[attr-defined]
    assert isinstance(spec, BlueGreenSpec)
    moved = BlueGreen(BlueGreenSpec("fb", "fb2", "blue", "x-preview", (), spec.watch))
    route = CompiledRoute(rig.route.spec, moved)
    await rig.ctl.tick(route, T0 + 2)
    r = await rig.rollout()
    assert (r.active, r.stable, r.candidate) == ("green", "fb2", "fb")
    assert (await rig.events())[-1]["event"] == "config"
