"""Shadow first: mirror only, no user traffic, until agreement earns step 1.

Pure state machine tests on a simulated clock, then the acceptance test against
the router as a real process with example model servers.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.model_server import ModelOptions, start_model_server
from router.control.base import window_id as window
from router.control.canary_machine import (
    PHASES,
    Event,
    Observation,
    command,
    in_shadow_first,
    initial,
    judging_gates,
    reconcile,
    step,
)
from router.control.machine import InvalidCommand
from router.core.gates import AgreementGate, ErrorRateGate, GateResult, Sample, Verdict
from router.core.rollout import Rollout
from strategies.canary import CanarySpec, ShadowFirstSpec, StepSpec
from tests.support.routerproc import RouterProcess

GATE = AgreementGate(min=0.95, min_requests=500)
SPEC = CanarySpec(
    "iris-v1",
    "iris-v2",
    (StepSpec(500, 60.0, 100), StepSpec(2500, 60.0, 100), StepSpec(10000)),
    shadow_first=ShadowFirstSpec(10_000, GATE),
)


def agreement(agree: int, n: int) -> Observation:
    """What the controller would pass in shadow first: the agreement gate's verdict."""
    result = GATE.judge(Sample(), Sample(), {"agreement": {"$.label": (agree, n)}})
    return Observation((result,))


def verdict(v: Verdict | str) -> Observation:
    word: Verdict = "pass" if v == "pass" else "fail" if v == "fail" else "wait"
    return Observation((GateResult("agreement", word, 0.9, 0.95, 300, 300, False, "figures"),))


def start() -> Rollout:
    return initial("iris", SPEC, 1000.0)


# -- the state machine -----------------------------------------------------------------------
def test_initial_is_shadow_first_at_weight_zero() -> None:
    """With shadow_first a rollout starts waiting at weight 0; its window opens now."""
    r = start()
    assert (r.phase, r.weight_bp, r.step, r.step_started_at) == ("waiting", 0, 0, 1000.0)
    assert r.reason == (
        "shadow first: mirroring 100 % of requests to iris-v2, no user traffic; "
        "needs 500 compared items of $.label at >= 95 % agreement"
    )
    assert window(r) == "1-1000000"


def test_waiting_says_how_far_it_is_in_plain_words() -> None:
    """Not enough comparisons: the reason gives counts and the agreement so far."""
    r, events = step(start(), SPEC, agreement(303, 312), 1010.0)
    assert (r.phase, r.weight_bp, events) == ("waiting", 0, [])
    assert r.reason == "shadow first: 312/500 compared items, agreement 97.1 % (min 95 %)"


def test_clear_disagreement_aborts_before_any_user_traffic() -> None:
    """70 % agreement over the minimum sample aborts; the reason says nobody was exposed."""
    r, events = step(start(), SPEC, agreement(350, 500), 1010.0)
    assert (r.phase, r.weight_bp) == ("aborted", 0)
    assert r.reason.startswith("aborted in shadow first: agreement gate failed: $.label")
    assert r.reason.endswith("iris-v2 never got user traffic")
    assert [(e.kind, e.figures["gate"]) for e in events] == [("abort", "agreement")]


def test_enough_agreement_opens_step_one_in_a_new_window() -> None:
    """500/500 agreeing opens step 0 at its weight, its window starting now."""
    r, events = step(start(), SPEC, agreement(500, 500), 1030.0)
    assert (r.phase, r.step, r.weight_bp, r.step_started_at) == ("progressing", 0, 500, 1030.0)
    assert r.reason.startswith("step 1/3 at 5 %: started, shadow first passed: $.label")
    assert [e.kind for e in events] == ["advance"]
    assert window(r) != window(start())


def test_only_the_shadow_first_gate_judges_shadow_first() -> None:
    """Metric gates cannot judge a candidate without users; the ramp uses them again."""
    r = start()
    assert judging_gates(r, SPEC) == (GATE,)
    assert judging_gates(step(r, SPEC, verdict("pass"), 1001.0)[0], SPEC) == (ErrorRateGate(),)


def test_promote_skips_shadow_first_and_pause_resume_returns_to_it() -> None:
    """promote opens step 0 (not 1); pause then resume goes back to shadow first."""
    paused, _ = command(start(), SPEC, "pause", 1001.0)
    assert (paused.phase, in_shadow_first(paused)) == ("paused", True)
    assert step(paused, SPEC, verdict("pass"), 1002.0)[0] == paused  # a pause holds
    assert step(paused, SPEC, verdict("fail"), 1002.0)[0].phase == "aborted"  # never the net
    resumed, _ = command(paused, SPEC, "resume", 1003.0)
    assert (resumed.phase, resumed.weight_bp, resumed.extra) == ("waiting", 0, {})
    for r in (start(), paused):
        moved, events = command(r, SPEC, "promote", 1004.0)
        assert (moved.phase, moved.step, moved.weight_bp) == ("progressing", 0, 500)
        assert "shadow first skipped by operator" in moved.reason
        assert [e.kind for e in events] == ["advance"]


def test_retry_and_a_new_revision_start_in_shadow_first_again() -> None:
    """An abort then retry (or a new candidate) starts clean: waiting, a new window."""
    aborted, _ = step(start(), SPEC, verdict("fail"), 1010.0)
    retried, _ = command(aborted, SPEC, "retry", 2000.0)
    assert (retried.phase, retried.weight_bp, window(retried)) == ("waiting", 0, "1-2000000")
    fresh, events = reconcile(aborted, replace(SPEC, candidate="iris-v3"), 3000.0)
    assert (fresh.phase, fresh.revision, fresh.weight_bp) == ("waiting", 2, 0)
    assert [e.kind for e in events] == ["revision"]


def test_config_edits_while_in_shadow_first() -> None:
    """Edited steps leave shadow first alone; removing shadow_first opens step 0."""
    r = start()
    assert reconcile(r, replace(SPEC, steps=(StepSpec(1000), StepSpec(10000))), 1001.0) == (r, [])
    moved, events = reconcile(r, replace(SPEC, shadow_first=None), 1002.0)
    assert (moved.phase, moved.weight_bp) == ("progressing", 500)
    assert "shadow first removed from the config" in moved.reason
    assert [e.kind for e in events] == ["advance"]


def test_retry_refused_in_shadow_first_says_where_it_is() -> None:
    """A verb shadow first does not allow is refused in plain words."""
    with pytest.raises(InvalidCommand) as info:
        command(start(), SPEC, "retry", 1001.0)
    assert str(info.value) == "cannot retry iris: it is in shadow first (promote to start step 1)"


# -- properties -------------------------------------------------------------------------------
VERDICTS = st.sampled_from(["pass", "fail", "wait"])
ACTIONS = st.one_of(
    st.tuples(st.just("obs"), VERDICTS),
    st.tuples(
        st.just("cmd"),
        st.sampled_from(["promote", "pause", "resume", "abort", "retry", "rollback", "full"]),
    ),
)


def apply(r: Rollout, action: tuple[str, str], now: float) -> tuple[Rollout, list[Event]]:
    kind, what = action
    if kind == "obs":
        return step(r, SPEC, verdict(what), now)
    verb = "promote" if what == "full" else what
    try:
        return command(r, SPEC, verb, now, full=what == "full")
    except InvalidCommand:
        return r, []


@settings(max_examples=300, deadline=None)
@given(actions=st.lists(ACTIONS, max_size=40), gaps=st.lists(st.floats(0, 100), min_size=40))
def test_users_reach_the_candidate_only_after_agreement_or_an_operator(
    actions: list[tuple[str, str]], gaps: list[float]
) -> None:
    """From shadow first, weight leaves 0 only on a passing agreement verdict or a command;
    weight stays in range and only drops by abort or rollback; phases stay known."""
    r, now = start(), 1000.0
    for action, gap in zip(actions, gaps, strict=False):
        now += gap
        before = r
        r, events = apply(r, action, now)
        kinds = {e.kind for e in events}
        assert 0 <= r.weight_bp <= 10000
        assert r.phase in PHASES
        if r.weight_bp < before.weight_bp:
            assert kinds & {"abort", "rollback"}, (before, r)
        if in_shadow_first(before) and r.weight_bp > 0:
            assert action in (
                ("obs", "pass"),
                ("cmd", "promote"),
                ("cmd", "full"),
                ("cmd", "resume"),
            )
        if in_shadow_first(r):
            assert r.weight_bp == 0


# -- acceptance: the router as a real process ----------------------------------------------------
@asynccontextmanager
async def model_servers(*options: ModelOptions) -> AsyncIterator[list[int]]:
    async with AsyncExitStack() as stack:
        ports = []
        for opts in options:
            runner, port = await start_model_server(opts)
            stack.push_async_callback(runner.cleanup)
            ports.append(port)
        yield ports


def shadow_first_config(ports: list[int]) -> dict[str, Any]:
    return {
        "logging": {"access_sample": 0},
        "controller": {"interval": "100ms", "lease_ttl": "1s"},
        "backends": {
            "v1": {"url": f"http://127.0.0.1:{ports[0]}"},
            "v2": {"url": f"http://127.0.0.1:{ports[1]}"},
        },
        "routes": [
            {
                "name": "iris",
                "match": {"path_prefix": "/"},
                "sticky": {"header": "X-User-Id"},
                "strategy": {
                    "canary": {
                        "stable": "v1",
                        "candidate": "v2",
                        "steps": [{"weight": 50, "pause": "1h"}, {"weight": 100}],
                        "analysis": {"interval": "200ms", "error_rate": {}},
                        "shadow_first": {
                            "percent": 100,
                            "min_requests": 150,
                            "min_agreement": 0.95,
                            "field": "$.label",
                        },
                    }
                },
            }
        ],
    }


class Traffic:
    """Prediction requests from distinct users at a steady rate; who answered each."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.backends: list[str] = []
        self.statuses: list[int] = []
        self.failures: list[str] = []
        self.rng = random.Random(5)

    async def until(self, done: asyncio.Event, limit: float, rate: float = 150.0) -> None:
        deadline = time.monotonic() + limit
        timeout = aiohttp.ClientTimeout(total=5)  # a stuck request fails the test, fast
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tasks: set[asyncio.Task[None]] = set()
            i = 0
            while not done.is_set() and time.monotonic() < deadline:
                task = asyncio.create_task(self._one(session, f"user-{i}"))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
                await asyncio.sleep(1 / rate)
            await asyncio.gather(*tasks)

    async def _one(self, session: aiohttp.ClientSession, user: str) -> None:
        body = {"features": [self.rng.gauss(0, 2) for _ in range(4)]}
        try:
            async with session.post(self.url, json=body, headers={"X-User-Id": user}) as resp:
                await resp.read()
                self.backends.append(resp.headers.get("X-Router-Backend", "?"))
                self.statuses.append(resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.failures.append(f"{user}: {exc!r}")


async def run_until(
    router: RouterProcess, wanted: str, within: float
) -> tuple[dict[str, Any], Traffic]:
    """Traffic until the rollout reaches `wanted` (then 0.5 s more); the rollout and traffic."""
    traffic, done = Traffic(router.url + "/predict"), asyncio.Event()
    runner = asyncio.create_task(traffic.until(done, within + 1))
    deadline, rollout = time.monotonic() + within, dict[str, Any]()
    try:
        while time.monotonic() < deadline and rollout.get("phase") != wanted:
            await asyncio.sleep(0.1)
            rollout = (await asyncio.to_thread(router.get_json, "/v1/routes/iris"))["rollout"] or {}
        await asyncio.sleep(0.5)  # requests after the move show where users go now
    finally:
        done.set()
        await runner
    assert rollout.get("phase") == wanted, f"{rollout}\n{router.log()[-3000:]}"
    assert traffic.failures == [], f"{traffic.failures[:5]}\n{router.log()[-3000:]}"
    return rollout, traffic


async def test_disagreeing_candidate_never_gets_user_traffic(tmp_path: Path) -> None:
    """A candidate whose labels are wrong 30 % of the time is aborted in shadow first;
    every client response came from the stable backend."""
    wrong = ModelOptions(version="v1", wrong_rate=0.3, seed=3)
    async with model_servers(ModelOptions(version="v1"), wrong) as ports:
        router = RouterProcess(tmp_path, shadow_first_config(ports)).start()
        try:
            rollout, traffic = await run_until(router, "aborted", within=15)
            history = router.get_json("/v1/routes/iris/history")["entries"]
        finally:
            router.stop()
    abort = history[-1]
    print(f"\n{len(traffic.backends)} requests; abort: {abort['reason']}")
    assert set(traffic.backends) == {"v1"}
    assert set(traffic.statuses) == {200}
    assert (abort["event"], abort["gate"]) == ("abort", "agreement")
    assert 0.55 < abort["value"] < 0.85  # 30 % wrong labels, give or take 4 SD
    assert rollout["weight_bp"] == 0
    assert "never got user traffic" in rollout["reason"]
    assert [e["event"] for e in history] == ["start", "abort"]


async def test_agreeing_candidate_moves_on_to_step_one(tmp_path: Path) -> None:
    """The same model as stable agrees on every label: shadow first opens step 1 (50 %)."""
    async with model_servers(ModelOptions(version="v1"), ModelOptions(version="v1")) as ports:
        router = RouterProcess(tmp_path, shadow_first_config(ports)).start()
        try:
            rollout, traffic = await run_until(router, "progressing", within=15)
            history = router.get_json("/v1/routes/iris/history")["entries"]
        finally:
            router.stop()
    advance = history[-1]
    print(f"\n{len(traffic.backends)} requests; {advance['reason']}")
    assert (rollout["step"], rollout["weight_bp"]) == (0, 5000)
    assert [e["event"] for e in history] == ["start", "advance"]
    assert "shadow first passed" in advance["reason"]
    assert "v2" in traffic.backends  # users reach the candidate once step 1 is open
    assert set(traffic.statuses) == {200}
