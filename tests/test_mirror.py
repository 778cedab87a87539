"""Mirrors end to end in one process: data plane on port 0, real model backends, a store.

The helpers here (`rig`, `model`, `post_many`) are shared with the other
test_mirror*.py files and test_shadow_e2e.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import aiohttp
from aiohttp import web

from examples.model_server import ModelOptions, ModelService, parse_features, start_model_server
from router.config.reader import parse
from router.dataplane.routing import build_table
from router.runtime import Runtime
from router.shadow.lanes import BREAKER_FAILURES
from router.shadow.mirror import Mirrors
from router.state.base import StateStore
from router.state.memory import MemoryStore
from tests.support.dataplane import Plane, running_plane
from tests.support.rawbackend import RawBackend, echo, free_port, reset, response

FEATURES = random.Random(7)


@dataclass
class Rig:
    plane: Plane
    mirrors: Mirrors
    ports: dict[str, int]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.plane.port}"

    async def settle(self) -> None:
        """Every queued copy handled and the figures flushed to the store."""
        async with asyncio.timeout(10):
            await self.mirrors.wait_idle()
        assert await self.mirrors.flush()


@contextlib.asynccontextmanager
async def model(opts: ModelOptions) -> AsyncIterator[int]:
    runner, port = await start_model_server(opts)
    try:
        yield port
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def models(*options: ModelOptions) -> AsyncIterator[list[int]]:
    """Several model servers at once; their ports in order."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(model(o)) for o in options]


@contextlib.asynccontextmanager
async def noisy_model(version: str, noise: float) -> AsyncIterator[int]:
    """The same model as `version`, its numbers moved by ±noise (float nondeterminism)."""
    service = ModelService(ModelOptions(version=version))
    rng = random.Random(3)

    async def predict(request: web.Request) -> web.Response:
        answer = service.answer(parse_features(json.loads(await request.read())))
        answer["probabilities"] = [p + rng.uniform(-noise, noise) for p in answer["probabilities"]]
        answer["confidence"] += rng.uniform(-noise, noise)
        return web.json_response(answer)

    app = web.Application()
    app.router.add_post("/{tail:.*}", predict)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


def config_text(ports: Mapping[str, int], routes: str, backend_extra: str = "timeout: 5s") -> str:
    lines = [f"  {n}: {{url: http://127.0.0.1:{p}, {backend_extra}}}" for n, p in ports.items()]
    return "backends:\n" + "\n".join(lines) + "\nroutes:\n" + routes


def shadow_route(name: str, prefix: str, block: str) -> str:
    return (
        f"  - name: {name}\n    match: {{path_prefix: {prefix}}}\n"
        f"    strategy:\n      shadow: {block}\n"
    )


@contextlib.asynccontextmanager
async def rig(
    ports: dict[str, int],
    routes: str,
    store: StateStore | None = None,
    *,
    backend_extra: str = "timeout: 5s",
    **mirror_kw: Any,
) -> AsyncIterator[Rig]:
    """A data plane with a started `Mirrors` as its shadow sink, on loopback."""
    config = parse(config_text(ports, routes, backend_extra))
    runtime = Runtime(config=config, table=build_table(config))
    mirrors = Mirrors(runtime, store or MemoryStore(), flush_interval=60.0, **mirror_kw)
    async with running_plane(runtime) as plane:
        plane.plane.shadow_sink = mirrors
        await mirrors.start()
        try:
            yield Rig(plane, mirrors, ports)
        finally:
            await mirrors.stop()


@dataclass
class Sent:
    answers: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


async def post_many(url: str, n: int, *, concurrency: int = 8) -> Sent:
    """POST `n` prediction requests (random features), `concurrency` at a time."""
    sent = Sent()
    bodies = [{"features": [FEATURES.gauss(0, 2) for _ in range(4)]} for _ in range(n)]
    gate = asyncio.Semaphore(concurrency)

    async def one(session: aiohttp.ClientSession, body: dict[str, Any]) -> None:
        async with gate:
            started = perf_counter()
            async with session.post(url, json=body) as resp:
                sent.statuses.append(resp.status)
                sent.answers.append(await resp.json(content_type=None))
            sent.seconds.append(perf_counter() - started)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, b) for b in bodies))
    return sent


FIELDS = """
        compare:
          - {field: $.label, kind: label}
          - {field: $.probabilities, kind: probs}
          - {field: $.confidence, kind: number, abs: 1.0e-6}"""


async def test_same_model_agrees_on_every_field() -> None:
    """A shadow running the primary's model (float noise within tolerance) agrees 100 %."""
    async with model(ModelOptions(version="v1")) as p1, noisy_model("v1", 9e-7) as p2:
        routes = shadow_route("fields", "/predict", "\n        primary: v1\n        shadows: [v2]")
        routes = routes.rstrip("\n") + FIELDS + "\n"
        whole = "{primary: v1, shadows: [v2], float_tolerance: 1.0e-5}"
        routes += shadow_route("whole", "/v2", whole)
        async with rig({"v1": p1, "v2": p2}, routes) as r:
            await post_many(r.url + "/predict", 60)
            await post_many(r.url + "/v2/models/iris/infer", 40)
            await r.settle()
            fields = (await r.mirrors.summary("fields"))["shadows"]["v2"]
            whole_doc = (await r.mirrors.summary("whole"))["shadows"]["v2"]
            diffs = await r.mirrors.diffs("fields") + await r.mirrors.diffs("whole")
    assert fields["agreement"]["k"] == fields["agreement"]["n"] == 60
    assert {f: v["agreement"]["k"] for f, v in fields["fields"].items()} == {
        "$.label": 60,
        "$.probabilities": 60,
        "$.confidence": 60,
    }
    assert fields["fields"]["$.confidence"]["mean_diff"] > 0  # the noise was there
    assert (whole_doc["agreement"]["k"], whole_doc["body_mismatch"]) == (40, 0)
    assert diffs == []


async def test_constant_label_agreement_is_that_labels_share() -> None:
    """A shadow always answering 'setosa' agrees exactly when the primary said setosa."""
    setosa_only = ModelOptions(version="v1", constant_label="setosa")
    async with models(ModelOptions(version="v1"), setosa_only) as (p1, p2):
        block = "\n        primary: v1\n        shadows: [v2]" + FIELDS
        async with rig({"v1": p1, "v2": p2}, shadow_route("iris", "/", block)) as r:
            sent = await post_many(r.url + "/predict", 150)
            await r.settle()
            figures = (await r.mirrors.summary("iris"))["shadows"]["v2"]
            diffs = await r.mirrors.diffs("iris", 5)
    setosa = sum(a["label"] == "setosa" for a in sent.answers)
    assert 0 < setosa < 150  # the test needs both kinds of answer
    label = figures["fields"]["$.label"]
    assert (label["agreement"]["k"], label["agreement"]["n"]) == (setosa, 150)
    assert label["agreement"]["lo"] <= setosa / 150 <= label["agreement"]["hi"]
    assert len(diffs) == 5
    for d in diffs:
        wrong = next(f for f in d["fields"] if f["field"] == "$.label")
        assert wrong["shadow"] == '"setosa"'
        assert wrong["primary"] != '"setosa"'
        assert json.loads(d["shadow"])["label"] == "setosa"
        assert json.loads(d["primary"])["label"] == json.loads(wrong["primary"])
        assert d["backend"] == "v2"
        assert "request" not in d


async def test_slow_shadow_never_delays_a_client_and_drops_are_counted() -> None:
    """With a shadow sleeping 2 s, every client answer comes at once; the overflow is dropped."""
    slow = ModelOptions(version="v2", latency_ms=2000)
    async with models(ModelOptions(version="v1"), slow) as (p1, p2):
        routes = shadow_route("iris", "/", "{primary: v1, shadows: [v2]}")
        async with rig({"v1": p1, "v2": p2}, routes, queue_size=4, workers_per_backend=2) as r:
            sent = await post_many(r.url + "/predict", 40)
            depth = r.mirrors.queue_depths()["v2"]
            assert await r.mirrors.flush()
            summary = await r.mirrors.summary("iris")
    assert sent.statuses == [200] * 40
    assert max(sent.seconds) < 1.0  # well under the shadow's 2 s
    assert depth <= 4
    assert summary["offered"] == 40
    assert summary["dropped"] >= 40 - 4 - 2  # queue + workers is all that fits
    assert summary["shadows"]["v2"]["mirror"]["dropped"] == summary["dropped"]


async def test_dead_shadow_is_no_answer_quickly() -> None:
    """A shadow nobody listens on: clients are served; each copy counts as no_answer."""
    async with model(ModelOptions(version="v1")) as p1:
        routes = shadow_route("iris", "/", "{primary: v1, shadows: [v2]}")
        ports = {"v1": p1, "v2": free_port()}
        async with rig(ports, routes, backend_extra="timeout: 5s, connect_timeout: 0.5s") as r:
            started = perf_counter()
            sent = await post_many(r.url + "/predict", 20)
            await r.settle()
            settled = perf_counter() - started
            figures = (await r.mirrors.summary("iris"))["shadows"]["v2"]
    assert sent.statuses == [200] * 20
    # the first copies fail (no_answer); then the breaker leaves the dead shadow alone
    tried, down = figures["n"], figures["mirror"]["down"]
    assert BREAKER_FAILURES <= tried < 20
    assert (figures["no_answer"], figures["agreement"]["k"]) == (tried, 0)
    assert tried + down == 20
    assert figures["status_mismatch"]["k"] == tried
    assert settled < 5.0  # refused at once, not held for the answer timeout


async def resetter(
    backend: RawBackend, reader: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    """Reads a request, then resets the connection instead of answering."""
    if await backend.next_request(reader) is not None:
        reset(w)


async def garbage(
    backend: RawBackend, reader: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    """Answers every request with bytes that are not HTTP."""
    while await backend.next_request(reader) is not None:
        w.write(b"SPLAT\r\n\r\n")
        await w.drain()


async def test_resetting_and_garbage_shadows_change_nothing_for_clients() -> None:
    """Shadows that reset or answer garbage: clients all get 200; copies are no_answer."""
    rst, bad = await RawBackend(resetter).start(), await RawBackend(garbage).start()
    try:
        async with model(ModelOptions(version="v1")) as p1:
            routes = shadow_route("iris", "/", "{primary: v1, shadows: [rst, bad]}")
            async with rig({"v1": p1, "rst": rst.port, "bad": bad.port}, routes) as r:
                sent = await post_many(r.url + "/predict", 20)
                await r.settle()
                shadows = (await r.mirrors.summary("iris"))["shadows"]
    finally:
        await rst.close()
        await bad.close()
    assert sent.statuses == [200] * 20
    assert all(a["model"] == "v1" for a in sent.answers)
    for name in ("rst", "bad"):
        pair = shadows[name]
        assert pair["n"] == pair["no_answer"] >= BREAKER_FAILURES, name
        assert pair["n"] + pair["mirror"]["down"] == 20, name
    assert len(rst.requests) == shadows["rst"]["n"]  # every copy it was sent did reach it


async def test_copy_carries_shadow_header_and_methods_filter() -> None:
    """Mirrored copies carry X-Shadow-Request: 1 and the request id; GET is not mirrored."""
    primary, shadow = await RawBackend(echo).start(), await RawBackend(echo).start()
    try:
        routes = shadow_route("r", "/", "{primary: p, shadows: [s], methods: [POST]}")
        async with rig({"p": primary.port, "s": shadow.port}, routes) as r:
            async with aiohttp.ClientSession() as session:
                headers = {"X-Request-Id": "req-1", "X-User": "u7", "Connection": "keep-alive"}
                async with session.post(r.url + "/a?b=1", data=b"hello", headers=headers) as resp:
                    assert resp.status == 200
                async with session.get(r.url + "/a") as resp:
                    assert resp.status == 200
            await r.settle()
    finally:
        await primary.close()
        await shadow.close()
    assert [(q.method, q.target, q.body) for q in shadow.requests] == [("POST", "/a?b=1", b"hello")]
    copy = shadow.requests[0]
    assert copy.header("x-shadow-request") == "1"
    assert copy.header("x-request-id") == "req-1"
    assert copy.header("x-user") == "u7"
    assert copy.header("host") == f"127.0.0.1:{shadow.port}"
    assert len(copy.all("x-request-id")) == 1
    assert primary.requests[0].header("x-shadow-request") is None


async def test_max_body_and_large_answers_are_skipped_and_counted() -> None:
    """A body over max_body is not mirrored; nor is a request whose answer is too big."""

    async def big(
        backend: RawBackend, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        while (req := await backend.next_request(reader)) is not None:
            size = 300 * 1024 if req.target == "/big" else 2
            w.write(response(200, b"x" * size))
            await w.drain()

    primary, shadow = await RawBackend(big).start(), await RawBackend(echo).start()
    try:
        routes = shadow_route("r", "/", "{primary: p, shadows: [s], max_body: 100}")
        async with rig({"p": primary.port, "s": shadow.port}, routes) as r:
            async with aiohttp.ClientSession() as session:
                for path, body in (("/small", b"y" * 150), ("/big", b"z"), ("/ok", b"z" * 100)):
                    async with session.post(r.url + path, data=body) as resp:
                        assert resp.status == 200
                        await resp.read()
            await r.settle()
            summary = await r.mirrors.summary("r")
    finally:
        await primary.close()
        await shadow.close()
    assert [q.target for q in shadow.requests] == ["/ok"]
    assert (summary["oversize_body"], summary["oversize_answer"]) == (1, 1)
    assert summary["offered"] == 3


async def test_sample_settings_fields_only_off_and_request_body() -> None:
    """fields_only keeps only compared values; off keeps nothing; the body only when asked."""
    virginica = ModelOptions(version="v1", constant_label="virginica")
    async with models(ModelOptions(version="v1"), virginica) as (p1, p2):
        base = "primary: v1, shadows: [v2], compare: [{field: $.label, kind: label}]"
        routes = "".join(
            shadow_route(name, f"/v2/models/{name}", f"{{{base}, sample_disagreements: {{{s}}}}}")
            for name, s in (
                ("plain", ""),
                ("fields", "fields_only: true"),
                ("none", "enabled: false"),
                ("body", "store_request_body: true, max: 3"),
            )
        )
        async with rig({"v1": p1, "v2": p2}, routes) as r:
            for name in ("plain", "fields", "none", "body"):
                await post_many(f"{r.url}/v2/models/{name}/infer", 30)
            await r.settle()
            diffs = {n: await r.mirrors.diffs(n, 100) for n in ("plain", "fields", "none", "body")}
    assert diffs["none"] == []
    assert diffs["plain"]
    assert all("request" not in d and "primary" in d for d in diffs["plain"])
    for d in diffs["fields"]:
        assert set(d) & {"primary", "shadow", "request", "target"} == set()
        assert d["fields"][0]["shadow"] == '"virginica"'
    assert len(diffs["body"]) == 3  # capped at max
    assert all(json.loads(d["request"])["features"] for d in diffs["body"])


async def test_noise_floor_from_a_secondary() -> None:
    """A secondary with the primary's model sets the noise floor; a real difference is not noise."""
    setosa_only = ModelOptions(version="v1", constant_label="setosa")
    v1 = ModelOptions(version="v1")
    async with models(v1, setosa_only, v1) as (p1, p2, p3):
        block = (
            "{primary: v1, shadows: [v2], secondary: {backend: v1b, percent: 100},"
            " compare: [{field: $.label, kind: label}]}"
        )
        async with rig({"v1": p1, "v2": p2, "v1b": p3}, shadow_route("r", "/", block)) as r:
            await post_many(r.url + "/predict", 80)
            await r.settle()
            summary = await r.mirrors.summary("r")
            diffs = await r.mirrors.diffs("r", 100)
    assert summary["secondary"]["agreement"]["k"] == 80
    noise = summary["shadows"]["v2"]["noise"]
    assert noise["fields"]["$.label"]["noisy"] is False
    assert noise["fields"]["$.label"]["excess"] > 0.2
    assert noise["fields"]["$.label"]["noise"]["k"] == 0
    assert {d["backend"] for d in diffs} == {"v2"}  # the secondary's are not samples


async def test_two_replicas_add_up(store: StateStore, peer: StateStore) -> None:
    """Two Mirrors (two replicas) flushing to one store: the figures are their sum."""
    async with model(ModelOptions(version="v1")) as p1, model(ModelOptions(version="v2")) as p2:
        ports = {"v1": p1, "v2": p2}
        routes = shadow_route("iris", "/", "{primary: v1, shadows: [v2]}")
        async with rig(ports, routes, store) as a, rig(ports, routes, peer) as b:
            await post_many(a.url + "/predict", 25)
            await post_many(b.url + "/predict", 15)
            await a.settle()
            await b.settle()
            from_a, from_b = await a.mirrors.summary("iris"), await b.mirrors.summary("iris")
    assert from_a["offered"] == from_b["offered"] == 40
    assert from_a["shadows"]["v2"]["n"] == from_b["shadows"]["v2"]["n"] == 40
    assert from_a["shadows"]["v2"]["mirror"]["sent"] == 40
