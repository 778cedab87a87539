"""Drift through a real router process: inputs, alarms, history, metrics, the canary gate."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from examples.model_server import ModelOptions, start_model_server
from router.ops.cli import main as routerctl
from tests.support.routerproc import RouterProcess

TOKEN = {"Authorization": "Bearer test-token"}
DIMS = 4
SHIFTED = 2  # the index of the feature the test moves


@pytest.fixture
async def models() -> AsyncIterator[Callable[[ModelOptions], Any]]:
    runners: list[web.AppRunner] = []

    async def start(opts: ModelOptions) -> str:
        runner, port = await start_model_server(opts)
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def drift_config(
    backends: dict[str, str], strategy: dict[str, Any], **drift: Any
) -> dict[str, Any]:
    block = {"inputs": ["$.features"], "outputs": ["$.label"], "reference": 400, "window": "30s"}
    block.update(min_samples=300, **drift)
    return {
        "logging": {"access_sample": 0},
        "controller": {"interval": "100ms", "lease_ttl": "1s"},
        "backends": {n: {"url": u} for n, u in backends.items()},
        "routes": [
            {"name": "scores", "match": {"path_prefix": "/"}, "drift": block, "strategy": strategy}
        ],
    }


async def send(url: str, bodies: list[dict[str, Any]], concurrency: int = 16) -> list[str]:
    """POST every body; returns the request ids the router gave back."""
    ids: list[str] = []
    queue = list(reversed(bodies))
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                async with session.post(url + "/predict", json=body) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
                    ids.append(resp.headers["X-Request-Id"])

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ids


def features(rng: np.random.Generator, n: int, shift: float = 0.0) -> list[dict[str, Any]]:
    rows = rng.normal(size=(n, DIMS))
    rows[:, SHIFTED] += shift
    return [{"features": [round(float(x), 4) for x in row]} for row in rows]


def get(router: RouterProcess, path: str) -> Any:
    req = urllib.request.Request(router.admin_url + path, headers=TOKEN)  # reads need it too
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def input_scores(router: RouterProcess) -> dict[str, dict[str, Any]]:
    body = get(router, "/v1/routes/scores/drift")
    stream = next(s for s in body["streams"] if s["stream"] == "inputs")
    if stream["reference"]["state"] != "fitted":
        return {}
    return {f["name"]: f for f in stream["series"][0]["features"]}


async def wait_for(check: Callable[[], bool], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.1)
    return check()


async def test_unshifted_inputs_stay_quiet_and_a_shift_alarms_by_name(
    tmp_path: Path, models: Callable[[ModelOptions], Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """No alarm on reference-like inputs; the moved feature alarms within 2,000 requests."""
    url = await models(ModelOptions(version="v1"))
    config = drift_config({"m": url}, {"split": {"weights": {"m": 100}}})
    router = RouterProcess(tmp_path, config).start()
    try:
        rng = np.random.default_rng(11)
        await send(router.url, features(rng, 400 + 600))
        # under load the router observes a sample (router/drift/watch.py): wait for min_samples
        assert await wait_for(lambda: min(_counts(router), default=0) >= 300), input_scores(router)
        quiet = input_scores(router)
        assert not [f for f in quiet.values() if f["alarm"]], quiet
        sent = 0
        while sent < 2000 and not input_scores(router).get(f"features[{SHIFTED}]", {}).get("alarm"):
            await send(router.url, features(rng, 250, shift=2.0))
            sent += 250
            await wait_for(lambda: bool(input_scores(router)[f"features[{SHIFTED}]"]["alarm"]), 1.5)
        scores = input_scores(router)
        assert scores[f"features[{SHIFTED}]"]["alarm"], scores
        assert [n for n, f in scores.items() if f["alarm"]] == [f"features[{SHIFTED}]"]
        assert await wait_for(lambda: _history_has(router, "drift_alarm"), 3.0)
        text = _metrics(router)
        labels = f'route="scores",series="inputs",role="input",feature="features[{SHIFTED}]"'
        line = f"router_drift_alarm{{{labels}}}"
        assert re.search(re.escape(line) + r" 1(\.0)?\n", text), text
        assert (
            routerctl(["--admin", router.admin_url, "--token", "test-token", "drift", "scores"])
            == 0
        )
        out = capsys.readouterr().out
        assert "ALARM" in out
        assert f"features[{SHIFTED}]" in out
        # history says which feature alarmed and on what figures (it printed only
        # "drift  drift_alarm", found with real MLServer)
        history = ["--admin", router.admin_url, "--token", "test-token", "history", "scores"]
        assert routerctl(history) == 0
        alarm = [ln for ln in capsys.readouterr().out.splitlines() if "drift_alarm" in ln]
        assert alarm, "no drift_alarm line in routerctl history"
        assert re.search(
            rf"inputs/features\[{SHIFTED}\]: PSI \d\.\d{{3}} >= 0\.2 over \d+ ", alarm[0]
        )
    finally:
        router.stop()


def _counts(router: RouterProcess) -> list[int]:
    return [f["n"] for f in input_scores(router).values()]


def _metrics(router: RouterProcess) -> str:
    with urllib.request.urlopen(router.admin_url + "/metrics", timeout=5) as resp:
        text: str = resp.read().decode()
    return text


def _history_has(router: RouterProcess, event: str) -> bool:
    entries = get(router, "/v1/routes/scores/history")["entries"]
    return any(e.get("event") == event for e in entries)


async def test_reset_reference_collects_again(
    tmp_path: Path, models: Callable[[ModelOptions], Any]
) -> None:
    """`drift --reset-reference` drops the fitted bins; the next requests fit new ones."""
    url = await models(ModelOptions(version="v1"))
    config = drift_config({"m": url}, {"split": {"weights": {"m": 100}}}, reference=100)
    router = RouterProcess(tmp_path, config).start()
    try:
        rng = np.random.default_rng(5)
        await send(router.url, features(rng, 150))
        assert await wait_for(lambda: bool(input_scores(router)))
        args = ["--admin", router.admin_url, "--token", "test-token", "drift", "scores"]
        assert routerctl([*args, "--reset-reference"]) == 0
        body = get(router, "/v1/routes/scores/drift")
        assert body["streams"][0]["reference"]["state"] == "collecting"
        await send(router.url, features(rng, 120, shift=5.0))
        assert await wait_for(lambda: bool(input_scores(router)))
        assert not input_scores(router)[f"features[{SHIFTED}]"]["alarm"]  # the new normal
    finally:
        router.stop()


async def test_constant_label_candidate_is_aborted_by_prediction_drift(
    tmp_path: Path, models: Callable[[ModelOptions], Any]
) -> None:
    """A candidate answering one label with HTTP 200 fails prediction_drift: canary aborted."""
    stable = await models(ModelOptions(version="v1"))
    broken = await models(ModelOptions(version="v2", constant_label="setosa"))
    canary = {
        "stable": "v1",
        "candidate": "v2",
        "steps": [{"weight": 50, "pause": "1m"}, {"weight": 100}],
        "analysis": {
            "interval": "200ms",
            "error_rate": {},
            "prediction_drift": {"min_requests": 100},
        },
    }
    config = drift_config({"v1": stable, "v2": broken}, {"canary": canary}, reference=100)
    router = RouterProcess(tmp_path, config).start()
    try:
        rng = np.random.default_rng(3)
        phase = ""
        for _ in range(12):
            await send(router.url, features(rng, 150))
            await asyncio.sleep(0.3)
            phase = get(router, "/v1/routes/scores")["rollout"]["phase"]
            if phase == "aborted":
                break
        assert phase == "aborted", router.log()[-3000:]
        entries = get(router, "/v1/routes/scores/history")["entries"]
        assert any("prediction_drift" in json.dumps(e) for e in entries), entries
    finally:
        router.stop()
