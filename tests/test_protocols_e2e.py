"""Acceptance, run as a new user would: the router as a real process in front of model
servers that speak their protocols (examples/v2_server.py, examples/tfserving_server.py),
batches of 1 to 8 rows, one protocol per test:

- two identical models: 100 % item agreement, items counted = rows sent;
- a candidate that answers one constant class: item agreement = that class's share of
  rows (exactly: the primary's answers say which rows are class 0);
- the same candidate under shadow first is aborted before any user request;
- the same candidate under an agreement-gated canary is aborted with zero HTTP errors.

The four run side by side, one route per Host header, on one router process.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from examples.tfserving_server import TfOptions, start_tfserving_server
from examples.v2_server import V2Options, start_v2_server
from tests.support.routerproc import RouterProcess

Body = Callable[[random.Random, int], tuple[str, dict[str, Any]]]
Classes = Callable[[dict[str, Any]], list[int]]


@dataclass(frozen=True)
class Speaker:
    """How a client of one protocol asks and reads, and how the route names the output."""

    protocol: str
    prefix: str
    compare: dict[str, str]  # the route's compare entry (without kind)
    request: Body
    classes: Classes
    tfserving: bool = False


def _rows(rng: random.Random, n: int) -> list[list[float]]:
    return [[round(rng.gauss(0, 2), 3) for _ in range(4)] for _ in range(n)]


def v2_request(rng: random.Random, n: int) -> tuple[str, dict[str, Any]]:
    rows = _rows(rng, n)
    data: list[Any] = rows if rng.random() < 0.5 else [x for r in rows for x in r]  # nested|flat
    tensor = {"name": "input-0", "shape": [n, 4], "datatype": "FP64", "data": data}
    return "/v2/models/iris/infer", {"inputs": [tensor], "parameters": {"content_type": "np"}}


def v2_classes(answer: dict[str, Any]) -> list[int]:
    out = next(o for o in answer["outputs"] if o["name"] == "predict")
    return [int(x) for x in out["data"]]


def tfs_request(rng: random.Random, n: int) -> tuple[str, dict[str, Any]]:
    key = "instances" if rng.random() < 0.5 else "inputs"  # row or columnar format
    return "/v1/models/iris:predict", {key: _rows(rng, n)}


def tfs_classes(answer: dict[str, Any]) -> list[int]:
    if "outputs" in answer:
        return [int(c) for c in answer["outputs"]["classes"]]
    return [int(p["classes"]) for p in answer["predictions"]]


def json_request(rng: random.Random, n: int) -> tuple[str, dict[str, Any]]:
    return "/v1/models/iris:predict", {"instances": _rows(rng, n)}


SPEAKERS = {
    "v2": Speaker("v2", "/v2/models/iris", {"output": "predict"}, v2_request, v2_classes),
    "tfserving": Speaker(
        "tfserving", "/v1/models/iris", {"output": "classes"}, tfs_request, tfs_classes, True
    ),
    "json": Speaker(
        "json",
        "/v1/models/iris",
        {"field": "$.predictions[*].classes"},
        json_request,
        tfs_classes,
        True,
    ),
}


@asynccontextmanager
async def servers(tfserving: bool) -> AsyncIterator[dict[str, str]]:
    """same-1 and same-2 (one version), const (class 0 always): name -> url."""
    async with AsyncExitStack() as stack:
        urls = {}
        for name, constant in (("same-1", None), ("same-2", None), ("const", 0)):
            if tfserving:
                runner, port = await start_tfserving_server(TfOptions(constant_class=constant))
            else:
                runner, port = await start_v2_server(V2Options(constant_class=constant))
            stack.push_async_callback(runner.cleanup)
            urls[name] = f"http://127.0.0.1:{port}"
        yield urls


def config(s: Speaker, urls: dict[str, str]) -> dict[str, Any]:
    label = {**s.compare, "kind": "label"}
    gate = {**s.compare, "min": 0.95, "min_requests": 150}
    first = {**s.compare, "min_requests": 150, "min_agreement": 0.95}
    steps = [{"weight": 50, "pause": "1h"}, {"weight": 100}]

    def route(host: str, strategy: dict[str, Any]) -> dict[str, Any]:
        match = {"path_prefix": s.prefix, "host": f"{host}.test"}
        return {"name": host, "match": match, "protocol": s.protocol, "strategy": strategy}

    shadow = {"primary": "same-1", "percent": 100, "compare": [label]}
    canary = {"stable": "same-1", "candidate": "const", "steps": steps}
    return {
        "logging": {"access_sample": 0},
        "controller": {"interval": "100ms", "lease_ttl": "1s"},
        "backends": {name: {"url": url} for name, url in urls.items()},
        "routes": [
            route("same", {"shadow": {**shadow, "shadows": ["same-2"]}}),
            route("const", {"shadow": {**shadow, "shadows": ["const"]}}),
            route("first", {"canary": {**canary, "shadow_first": first,
                                       "analysis": {"interval": "200ms"}}}),
            route("gate", {"canary": {**canary, "compare": [label],
                                      "analysis": {"interval": "200ms", "agreement": gate}}}),
        ],
    }  # fmt: skip


@dataclass
class Sent:
    requests: int = 0
    rows: int = 0
    class0: int = 0  # rows the primary answered with class 0
    backends: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)


async def send(
    session: aiohttp.ClientSession, url: str, s: Speaker, host: str, n: int, seed: int
) -> Sent:
    """n requests of 1..8 rows each, 8 at a time, from distinct users."""
    rng, sent = random.Random(seed), Sent()
    bodies = [s.request(rng, 1 + i % 8) for i in range(n)]

    async def one(i: int, path: str, body: dict[str, Any]) -> None:
        headers = {"Host": f"{host}.test", "X-User-Id": f"u{i}"}
        async with session.post(url + path, json=body, headers=headers) as resp:
            answer = json.loads(await resp.read())
            sent.statuses.append(resp.status)
            sent.backends.append(resp.headers.get("X-Router-Backend", "?"))
            if resp.status == 200:
                classes = s.classes(answer)
                sent.requests, sent.rows = sent.requests + 1, sent.rows + len(classes)
                sent.class0 += classes.count(0)

    for start in range(0, n, 8):
        await asyncio.gather(*(one(start + i, *b) for i, b in enumerate(bodies[start : start + 8])))
    return sent


def get(router: RouterProcess, path: str) -> Any:
    return router.get_json(path)


async def settled(router: RouterProcess, route: str, requests: int) -> dict[str, Any]:
    """The shadow figures once every mirrored request was judged (within 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        body = await asyncio.to_thread(get, router, f"/v1/routes/{route}/shadow")
        pair = next(iter(body["shadows"].values()), {"n": 0})
        if pair["n"] >= requests or time.monotonic() > deadline:
            return dict(pair)
        await asyncio.sleep(0.1)


async def until_aborted(
    session: aiohttp.ClientSession, router: RouterProcess, s: Speaker, route: str
) -> tuple[dict[str, Any], Sent]:
    """Traffic until the route's rollout is aborted (at most 20 s)."""
    total, deadline, seed = Sent(), time.monotonic() + 20, 100
    rollout: dict[str, Any] = {}
    while time.monotonic() < deadline and rollout.get("phase") != "aborted":
        part = await send(session, router.url, s, route, 40, seed)
        seed += 1
        total.backends += part.backends
        total.statuses += part.statuses
        rollout = (await asyncio.to_thread(get, router, f"/v1/routes/{route}"))["rollout"] or {}
    return rollout, total


@pytest.mark.parametrize("protocol", ["v2", "tfserving", "json"])
async def test_items_agreement_and_gates_per_protocol(tmp_path: Path, protocol: str) -> None:
    """See the module docstring: the four checks for one protocol."""
    s = SPEAKERS[protocol]
    async with servers(s.tfserving) as urls:
        router = RouterProcess(tmp_path, config(s, urls)).start()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
                same = await send(session, router.url, s, "same", 120, 1)
                const = await send(session, router.url, s, "const", 120, 2)
                first, first_sent = await until_aborted(session, router, s, "first")
                gate, gate_sent = await until_aborted(session, router, s, "gate")
                async with session.get(
                    router.url + s.prefix, headers={"Host": "same.test"}
                ) as meta:  # metadata passes through, and is not compared
                    assert meta.status in (200, 404, 405)
            same_pair = await settled(router, "same", same.requests)
            const_pair = await settled(router, "const", const.requests)
            first_history = get(router, "/v1/routes/first/history")["entries"]
        finally:
            router.stop()
    print(f"\n{protocol}: {same.rows} rows in {same.requests} requests agree "
          f"{same_pair['agreement']['k']}/{same_pair['agreement']['n']}; constant class 0: "
          f"{const_pair['agreement']['k']}/{const_pair['agreement']['n']} "
          f"(class 0 rows {const.class0}); shadow first: {first['reason']}; "
          f"gate: {gate['reason']}")  # fmt: skip
    assert same_pair["agreement"]["n"] == same.rows  # items counted = rows sent
    assert same_pair["agreement"]["k"] == same.rows  # 100 % item agreement
    assert same_pair["requests"]["n"] == same.requests
    assert const_pair["agreement"]["n"] == const.rows
    assert const_pair["agreement"]["k"] == const.class0  # exactly the share of class-0 rows
    assert first["phase"] == "aborted"
    assert "never got user traffic" in first["reason"]
    assert set(first_sent.backends) == {"same-1"}  # no user reached the candidate
    assert [e["event"] for e in first_history] == ["start", "abort"]
    assert gate["phase"] == "aborted"
    assert gate["reason"].startswith("aborted: agreement gate failed")
    assert set(gate_sent.statuses) == {200}  # zero HTTP errors: the answers were wrong
