"""Shadow mode from the operator's side: model servers, the data plane, Mirrors, the
admin API and `routerctl status` / `routerctl diffs` as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from examples.model_server import ModelOptions
from router.dataplane.metrics import Metrics
from router.ops.admin import build_admin_app, start_admin
from tests.test_mirror import FIELDS, Rig, model, models, post_many, rig, shadow_route

TOKEN = "shadow-test-token"

ROOT = Path(__file__).resolve().parent.parent


async def routerctl(admin: str, *args: str) -> tuple[int, str, str]:
    """routerctl as a subprocess, awaited without blocking the loop serving the admin API."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("ROUTER_ADMIN_TOKEN", "ROUTERCTL_ADMIN")
    }
    env["ROUTER_ADMIN_TOKEN"] = TOKEN  # reads need a token too
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.ops.cli", "--admin", admin, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def admin_for(r: Rig, *, shadow: bool = True) -> AsyncIterator[str]:
    app = build_admin_app(r.plane.runtime, Metrics(), TOKEN, shadow=r.mirrors if shadow else None)
    runner, port = await start_admin(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def constant_label_rig() -> AsyncIterator[tuple[Rig, int]]:
    """Primary v1, shadow always 'setosa'; 60 requests sent and settled. Yields the
    rig and how many of the primary's answers were setosa."""
    setosa_only = ModelOptions(version="v1", constant_label="setosa")
    async with models(ModelOptions(version="v1"), setosa_only) as (p1, p2):
        block = "\n        primary: v1\n        shadows: [v2]" + FIELDS
        async with rig({"v1": p1, "v2": p2}, shadow_route("iris", "/", block)) as r:
            sent = await post_many(r.url + "/predict", 60)
            await r.settle()
            yield r, sum(a["label"] == "setosa" for a in sent.answers)


async def test_routerctl_diffs_prints_both_answers() -> None:
    """`routerctl diffs iris -n 3` prints three disagreements with both answers; --json parses."""
    async with constant_label_rig() as (r, _), admin_for(r) as admin:
        code, out, err = await routerctl(admin, "diffs", "iris", "-n", "3")
        jcode, jout, _ = await routerctl(admin, "diffs", "iris", "-n", "3", "--json")
    assert code == 0, err
    assert out.count("request ") == 3
    assert out.count("$.label: differs") == 3
    assert out.count('shadow:  {"label": "setosa"') == 3
    assert out.count("primary: {") == 3
    assert "shadow v2" in out
    records = json.loads(jout)
    assert jcode == 0
    assert len(records) == 3
    assert all(json.loads(rec["shadow"])["label"] == "setosa" for rec in records)


async def test_routerctl_status_shows_agreement_per_field_and_drops() -> None:
    """`routerctl status iris` adds agreement per field with its interval, and mirror drops."""
    async with constant_label_rig() as (r, setosa), admin_for(r) as admin:
        code, out, err = await routerctl(admin, "status", "iris")
        jcode, jout, _ = await routerctl(admin, "status", "iris", "--json")
    assert code == 0, err
    assert f"$.label          {100 * setosa / 60:.1f}% [" in out
    assert "n=60" in out
    assert "shadow v2 vs v1: items agreeing" in out
    assert "mirror offered 60  dropped 0" in out
    shadow = json.loads(jout)["shadow"]
    assert jcode == 0
    assert shadow["shadows"]["v2"]["fields"]["$.label"]["agreement"]["k"] == setosa


async def test_admin_shadow_and_diffs_endpoints() -> None:
    """GET /v1/routes/NAME/shadow and /diffs?n=: figures, samples, 404, 400 and 501 errors."""
    async with (
        constant_label_rig() as (r, setosa),
        admin_for(r) as admin,
        admin_for(r, shadow=False) as bare,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as s,
    ):
        async with s.get(f"{admin}/v1/routes/iris/shadow") as resp:
            figures = await resp.json()
        async with s.get(f"{admin}/v1/routes/iris/diffs?n=2") as resp:
            diffs = await resp.json()
        statuses = []
        for url in (
            f"{admin}/v1/routes/nope/shadow",
            f"{admin}/v1/routes/iris/diffs?n=x",
            f"{bare}/v1/routes/iris/shadow",
        ):
            async with s.get(url) as resp:
                statuses.append(resp.status)
    assert figures["shadows"]["v2"]["fields"]["$.label"]["agreement"]["k"] == setosa
    assert figures["local"]["queue"] == {"v2": 0}
    assert len(diffs["diffs"]) == 2
    assert statuses == [404, 400, 501]


async def test_routerctl_diffs_on_a_route_without_samples() -> None:
    """A route with nothing sampled says so (exit 0); an unknown route exits 1."""
    async with model(ModelOptions(version="v1")) as p1:
        routes = shadow_route("iris", "/", "{primary: v1, shadows: [v1b]}")
        async with rig({"v1": p1, "v1b": p1}, routes) as r, admin_for(r) as admin:
            await post_many(r.url + "/predict", 5)
            await r.settle()
            code, out, _ = await routerctl(admin, "diffs", "iris")
            bad, _, err = await routerctl(admin, "diffs", "nope")
    assert (code, out.strip()) == (0, "no disagreement sampled for iris")
    assert bad == 1
    assert "unknown route" in err


def test_admin_app_builds_without_shadow() -> None:
    """build_admin_app keeps working for callers that pass no shadow figures."""
    from tests.test_admin import make_runtime

    assert isinstance(build_admin_app(make_runtime(), Metrics(), None), web.Application)
