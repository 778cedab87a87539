"""The ladder's evidence through a real router process, as an operator meets it.

A "human" review desk and a model answering {"label", "confidence"}
(tests/support/ladder.py), memory and Redis state: a model killed under load
at partial fails no request; shadow agreement and accuracy from labels are
exactly what was sent; a step up without evidence is refused and a forced one
recorded; `advance: auto` climbs to partial and steps back down when the
model's accuracy drops.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.ladder import Hit, Scripted, automation_route, post_labels, send, serving, truth
from tests.support.routerproc import RouterProcess, free_port, wait_port


@pytest.fixture(params=["memory", "redis"])
def state_url(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "memory" else str(request.getfixturevalue("redis_url"))


async def status_of(router: RouterProcess) -> dict[str, Any]:
    body = await asyncio.to_thread(router.get_json, "/v1/status")
    found: dict[str, Any] = (body.get("analysis") or {}).get("inspect") or {}
    return found


async def until(
    router: RouterProcess, ok: Callable[[dict[str, Any]], bool], within: float = 15.0
) -> dict[str, Any]:
    """The route's published figures once `ok` holds (they are refreshed every 2 s)."""
    deadline, seen = time.monotonic() + within, {}
    while time.monotonic() < deadline:
        seen = await status_of(router)
        if seen and ok(seen):
            return seen
        await asyncio.sleep(0.2)
    raise AssertionError(f"never: {seen}\n{router.log()[-2000:]}")


def compared(figures: dict[str, Any]) -> int:
    """Items compared, model vs human, in the route's published figures."""
    return int(((figures.get("agreement") or {}).get("agreement") or {}).get("n", 0))


def fallback_metrics(router: RouterProcess) -> dict[str, int]:
    out = {}
    for line in router.get_text("/metrics").splitlines():
        if line.startswith("router_automation_fallbacks_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = int(float(line.rsplit(" ", 1)[1]))
    return out


async def test_model_killed_at_partial_under_load_fails_no_request(
    tmp_path: Path, state_url: str | None
) -> None:
    """600 requests, 16 at a time; the model process is SIGKILLed once 20 of the last 400
    were answered: every answer is 200, the human answers all the model could not, and each
    fallback is counted by reason (here and, summed over replicas, in the store)."""
    port = free_port()
    model = await asyncio.to_thread(
        subprocess.Popen, [sys.executable, "-m", "tests.support.ladder", str(port)]
    )
    try:
        wait_port(port)
        async with serving(Scripted("desk")) as (desk,):
            block = {"confidence": "$.confidence", "threshold": 0.5}
            config = automation_route(
                f"http://127.0.0.1:{port}", desk.url, "partial", state_url, **block
            )
            router = RouterProcess(tmp_path, config).start()
            try:
                first = await send(router.url, range(200))
                answered: asyncio.Queue[Hit] = asyncio.Queue()
                later = asyncio.create_task(send(router.url, range(200, 600), answered=answered))
                for _ in range(20):  # the kill lands early in the load, however fast it runs
                    await answered.get()
                model.send_signal(signal.SIGKILL)
                hits = first + await later
                reasons = await asyncio.to_thread(fallback_metrics, router)
                desk_n = sum(h.backend == "desk" for h in hits)
                figures = await until(router, lambda f: _total(f) >= desk_n)
            finally:
                router.stop()
    finally:
        model.kill()
        model.wait()
    assert [h.status for h in hits] == [200] * 600
    by_desk = [h for h in hits if h.backend == "desk"]
    assert {h.backend for h in first} == {"model"}
    assert 100 <= len(by_desk) <= 400  # everything after the kill, whatever was in flight
    assert all(h.label == truth(h.i) for h in hits)
    print(f"fallbacks by reason: {reasons}, desk answered {len(by_desk)}")
    assert sum(reasons.values()) == len(by_desk)  # every human answer was a fallback
    assert reasons.get("refused", 0) > 0
    assert set(reasons) <= {"refused", "reset", "timeout"}
    assert figures["fallbacks"]["total"] == reasons  # the store's sum: one replica here


def _total(figures: dict[str, Any]) -> int:
    return sum((figures.get("fallbacks") or {}).get("total", {}).values())


async def test_shadow_agreement_and_accuracy_are_exactly_what_was_sent(
    tmp_path: Path, state_url: str | None
) -> None:
    """shadow: the model matches the human's label on every other item and adds a
    confidence: agreement on $.label is 50 % with its interval; from labels the model
    scores exactly what it answered, the human exactly 100 %."""
    model = Scripted("model", right=lambda i: i % 2 == 0, confidence=lambda i: 0.9)
    async with serving(model, Scripted("desk")) as (model, desk):
        compare = [{"field": "$.label", "kind": "label"}]
        config = automation_route(model.url, desk.url, "shadow", state_url, compare=compare)
        router = RouterProcess(tmp_path, config).start()
        try:
            await until(router, lambda f: f.get("window") is not None)
            hits = await send(router.url, range(400))
            figures = await until(
                router, lambda f: ((f.get("agreement") or {}).get("n") or 0) >= 400
            )
            await _model_answered(model, 400)
            outcomes = await post_labels(router.admin_url, hits)
            report = await asyncio.to_thread(router.get_json, "/v1/routes/inspect/feedback")
        finally:
            router.stop()
    label = figures["agreement"]["fields"]["$.label"]["agreement"]
    assert (label["k"], label["n"]) == (200, 400)
    assert label["lo"] < 0.5 < label["hi"]
    assert outcomes == {
        "accepted": 400,
        "matched": 400,
        "duplicate": 0,
        "mismatched": 0,
        "unknown": 0,
    }
    by_rid = {h.rid: h for h in hits}
    sent = [label == truth(by_rid[rid].i) for rid, label in model.answered.items()]
    mirror = report["backends"]["model~mirror"]
    assert (mirror["correct"], mirror["n"]) == (sum(sent), len(sent)) == (200, 400)
    assert report["backends"]["desk"]["accuracy"] == 1.0


async def _model_answered(model: Scripted, n: int) -> None:
    for _ in range(100):
        if len(model.answered) >= n:
            return
        await asyncio.sleep(0.05)


def routerctl(router: RouterProcess, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "router.ops.cli", "--admin", router.admin_url, "--token"]
    return subprocess.run(
        [*cmd, "test-token", *args], capture_output=True, text=True, timeout=10, check=False
    )


async def test_a_step_up_without_evidence_is_refused_and_a_forced_one_recorded(
    tmp_path: Path,
) -> None:
    """human -> full is refused (one step at a time); shadow is free; shadow -> assist
    waits for agreement; --force --reason moves anyway and history keeps the reason and
    the figures; stepping down is instant."""
    async with serving(Scripted("model", confidence=lambda i: 0.9), Scripted("desk")) as (m, d):
        router = RouterProcess(tmp_path, automation_route(m.url, d.url, "human", None)).start()
        try:
            await until(router, lambda f: f.get("window") is not None)
            skip = await asyncio.to_thread(routerctl, router, "automation", "inspect", "full")
            shadow = await asyncio.to_thread(routerctl, router, "automation", "inspect", "shadow")
            await send(router.url, range(20))
            # the comparisons reach the store about once a second: decide on all 20
            await until(router, lambda f: compared(f) >= 20)
            bare = await asyncio.to_thread(routerctl, router, "automation", "inspect", "assist")
            forced = await asyncio.to_thread(
                routerctl,
                router,
                "automation",
                "inspect",
                "assist",
                "--force",
                "--reason",
                "pilot week",
            )
            figures = await until(router, lambda f: f.get("level") == "assist")
            status = await asyncio.to_thread(routerctl, router, "status", "inspect")
            down = await asyncio.to_thread(routerctl, router, "automation", "inspect", "human")
            history = await asyncio.to_thread(routerctl, router, "history", "inspect")
        finally:
            router.stop()
    assert skip.returncode == 1, skip.stderr
    assert "skips a level" in skip.stderr, skip.stderr
    assert shadow.returncode == 0, shadow.stderr
    assert bare.returncode == 1, bare.stdout
    assert "not enough evidence for assist: assist — agreement" in bare.stderr, bare.stderr
    assert re.search(r"n = \d+/200", bare.stderr), bare.stderr
    assert forced.returncode == 0, forced.stderr
    assert figures["next"]["level"] == "partial"
    assert "next: partial — agreement" in status.stdout, status.stdout
    assert down.returncode == 0, down.stderr
    lines = history.stdout.splitlines()
    moves = [line for line in lines if "automation_level" in line]
    assert [m.split("automation_level")[1].split()[:3] for m in moves] == [
        ["human", "->", "shadow"],
        ["shadow", "->", "assist"],
        ["assist", "->", "human"],
    ], history.stdout
    assert "(forced: pilot week)" in moves[1]
    # no `compare` list: whole answers are compared, and the model's extra confidence
    # field never matches the human's answer: the figures say so
    assert any("figures then: agreement 0.0%; compared 20" in line for line in lines), lines


async def test_auto_climbs_to_partial_and_steps_down_when_accuracy_drops(
    tmp_path: Path, state_url: str | None
) -> None:
    """advance: auto from human: shadow at once, assist after 100 agreeing mirrored items,
    partial after labels show the model as good as the human; then the model turns wrong
    on 70 % of items and the ladder steps back to assist by itself, saying why."""
    model = Scripted("model", confidence=lambda i: 0.3 if i % 4 == 0 else 0.9)
    async with serving(model, Scripted("desk")) as (model, desk):
        block = {
            "confidence": "$.confidence",
            "threshold": 0.5,
            "compare": [{"field": "$.label", "kind": "label"}],
            "advance": "auto",
            "evidence": {
                "assist": {"min_samples": 100, "min_agreement": 0.9},
                "partial": {
                    "min_samples": 100,
                    "min_agreement": 0.9,
                    "min_labels": 50,
                    "accuracy_margin": 0.05,
                },
            },
        }
        router = RouterProcess(
            tmp_path, automation_route(model.url, desk.url, "human", state_url, **block)
        ).start()
        try:
            await until(router, lambda f: f.get("level") == "shadow")
            await send(router.url, range(150))
            await until(router, lambda f: f.get("level") == "assist")
            hits = await send(router.url, range(150, 300))
            await asyncio.sleep(0.3)  # the drift pass remembers the answers
            await post_labels(router.admin_url, hits)
            await until(router, lambda f: f.get("level") == "partial")
            model.right = lambda i: i % 10 < 3
            hits = await send(router.url, range(300, 700))
            await asyncio.sleep(0.3)
            await post_labels(router.admin_url, hits)
            down = await until(router, lambda f: f.get("level") == "assist")
            history = await asyncio.to_thread(router.get_json, "/v1/routes/inspect/history?n=50")
        finally:
            router.stop()
    assert {h.status for h in hits} == {200}
    moves = [
        (e["from"], e["to"], e["actor"])
        for e in history["entries"]
        if e.get("event") == "automation_level"
    ]
    assert [(a, b) for a, b, _ in moves] == [
        ("human", "shadow"),
        ("shadow", "assist"),
        ("assist", "partial"),
        ("partial", "assist"),
    ], moves
    assert all(actor.startswith("controller") for _, _, actor in moves)
    last = [e for e in history["entries"] if e.get("event") == "automation_level"][-1]
    assert "the evidence for partial failed" in last["reason"], last
    assert last["evidence"]["model_accuracy"] < 0.5
    assert down["level"] == "assist"


async def test_an_accuracy_gated_canary_aborts_a_candidate_30_points_worse(
    tmp_path: Path, state_url: str | None
) -> None:
    """Stable right on 90 % of items, the candidate on 60 %: once the step's labels come
    in, the accuracy gate aborts the canary; no client saw an HTTP error."""
    stable = Scripted("stable", right=lambda i: i % 10 != 0)
    candidate = Scripted("candidate", right=lambda i: i % 10 < 6)
    async with serving(stable, candidate) as (stable, candidate):
        canary = {
            "stable": "stable",
            "candidate": "candidate",
            "steps": [{"weight": 50, "pause": "1h"}, {"weight": 100}],
            "analysis": {"interval": "200ms", "accuracy": {"max_drop": 0.05, "min_labels": 100}},
        }
        config: dict[str, Any] = {
            "logging": {"access_sample": 0},
            "controller": {"interval": "100ms"},
            "backends": {"stable": {"url": stable.url}, "candidate": {"url": candidate.url}},
            "routes": [
                {
                    "name": "iris",
                    "match": {"path_prefix": "/"},
                    "drift": {"outputs": ["$.label"], "reference": 50},
                    "strategy": {"canary": canary},
                }
            ],
        }
        if state_url:
            config["state"] = {"url": state_url, "poll_interval": "1s"}
        router = RouterProcess(tmp_path, config).start()
        try:
            for _ in range(100):
                route = await asyncio.to_thread(router.get_json, "/v1/routes/iris")
                if (route.get("rollout") or {}).get("phase") == "progressing":
                    break
                await asyncio.sleep(0.05)
            hits = await send(router.url, range(1000))
            await asyncio.sleep(0.3)  # the drift pass remembers the answers
            await post_labels(router.admin_url, hits)
            for _ in range(100):
                route = await asyncio.to_thread(router.get_json, "/v1/routes/iris")
                if route["rollout"]["phase"] == "aborted":
                    break
                await asyncio.sleep(0.1)
        finally:
            router.stop()
    assert {h.status for h in hits} == {200}
    assert {h.backend for h in hits} == {"stable", "candidate"}
    assert route["rollout"]["phase"] == "aborted", route
    assert "accuracy" in route["rollout"]["reason"], route["rollout"]["reason"]


@pytest.mark.parametrize("fallback", [True, False])
async def test_full_with_the_model_down_falls_back_to_the_human_when_configured(
    tmp_path: Path, fallback: bool
) -> None:
    """full, the model refusing connections: with `fallback` (the default) the human
    answers; without it the client gets the model's 502, as at any plain route."""
    async with serving(Scripted("desk")) as (desk,):
        config = automation_route("http://127.0.0.1:9", desk.url, "full", None, fallback=fallback)
        router = RouterProcess(tmp_path, config).start()
        try:
            hits = await send(router.url, range(20), concurrency=4)
        finally:
            router.stop()
    if fallback:
        assert [(h.status, h.backend) for h in hits] == [(200, "desk")] * 20
    else:
        assert {h.status for h in hits} == {502}
