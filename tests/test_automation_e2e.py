"""The automation ladder through a real router process: partial deferral, assist, levels."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from examples.model_server import LinearModel, ModelOptions, start_model_server
from router.control.automation import AutomationController
from router.control.base import Writer
from router.dataplane.routing import build_table
from router.state.live import LiveState
from router.state.redis import RedisStore
from tests.support.backends import NamedBackend, named_backends
from tests.support.routerproc import RouterProcess

THRESHOLD = 0.8


@pytest.fixture
async def model() -> AsyncIterator[str]:
    runner, port = await start_model_server(ModelOptions(version="v1"))
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def rows_with_low_confidence(n: int, share: float) -> tuple[np.ndarray[Any, Any], list[bool]]:
    """n feature rows of which `share` get a model confidence below THRESHOLD."""
    rng = np.random.default_rng(4)
    pool = rng.normal(size=(20 * n, 4))
    confident = np.array([LinearModel("v1").predict(r).max() >= THRESHOLD for r in pool])
    low = round(n * share)
    rows = np.concatenate([pool[~confident][:low], pool[confident][: n - low]])
    order = rng.permutation(n)
    flags = [bool(i >= low) for i in range(n)]
    return rows[order], [flags[i] for i in order]


def automation_config(
    model: str, human: NamedBackend, level: str, redis_url: str, **extra: Any
) -> dict[str, Any]:
    block: dict[str, Any] = {"model": "model", "human": "desk", "level": level}
    block.update(confidence="$.confidence", threshold=THRESHOLD, **extra)
    return {
        "logging": {"access_sample": 0},
        "state": {"url": redis_url, "poll_interval": "1s"},
        "backends": {"model": {"url": model}, "desk": {"url": human.url}},
        "routes": [
            {"name": "inspect", "match": {"path_prefix": "/"}, "strategy": {"automation": block}}
        ],
    }


FORGED = '{"label": "forged by the client"}'


async def post_all(url: str, rows: np.ndarray[Any, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(X-Router-Backend, body) per row, in order."""
    async with aiohttp.ClientSession() as session:

        async def one(row: np.ndarray[Any, Any]) -> tuple[str, dict[str, Any]]:
            body = {"features": row.tolist()}
            forged = {"X-Model-Suggestion": FORGED}  # only the router may set it
            async with session.post(url + "/predict", json=body, headers=forged) as resp:
                assert resp.status == 200
                return resp.headers["X-Router-Backend"], await resp.json()

        out: list[tuple[str, dict[str, Any]]] = []
        for start in range(0, len(rows), 50):
            out += await asyncio.gather(*(one(r) for r in rows[start : start + 50]))
        return out


async def test_partial_defers_the_unconfident_share_and_the_rate_shows_it(
    tmp_path: Path, model: str, redis_url: str
) -> None:
    """partial at 0.8: the ~30 % below it go to the human; deferral rate ~0.3; level moves."""
    rows, confident = rows_with_low_confidence(600, 0.3)
    async with named_backends("desk") as humans:
        config = automation_config(model, humans["desk"], "partial", redis_url)
        router = RouterProcess(tmp_path, config).start()
        store = RedisStore(redis_url)
        await store.start()
        try:
            await level_window(store, "inspect")
            answers = await post_all(router.url, rows)
            served = [b for b, _ in answers]
            assert served == ["model" if c else "desk" for c in confident]
            ctl, route = _controller(store, config)
            figures = await _figures_when(ctl, route, 600)
            assert figures["deferral_rate"] == pytest.approx(0.3, abs=0.01)
            assert figures["level"] == "partial"
            assert figures["next_level"] == "full"
            status, body = await ctl.command(route, "automation", {"level": "full"}, time.time())
            assert status == 409, body  # deferral 0.3 > max_deferral 0.1: no evidence for full
            assert "deferral 0.300" in body["error"], body
            forced = {"level": "full", "force": True, "reason": "load test"}
            status, body = await ctl.command(route, "automation", forced, time.time())
            assert status == 200, body
            await asyncio.sleep(0.5)  # pub/sub carries the level to the router
            later = await post_all(router.url, rows[:60])
            assert {b for b, _ in later} == {"model"}
            entries = await store.history("inspect", 10)
            assert entries[-1]["event"] == "automation_level"
            assert (entries[-1]["from"], entries[-1]["to"]) == ("partial", "full")
            assert entries[-1]["forced"] is True
            assert "forced: load test" in entries[-1]["reason"]
            assert entries[-1]["evidence"]["deferral_rate"] == pytest.approx(0.3, abs=0.01)
        finally:
            router.stop()
            await store.close()


async def test_assist_sends_every_request_to_the_human_with_the_suggestion(
    tmp_path: Path, model: str, redis_url: str
) -> None:
    """assist: the human answers every request and receives the model's answer as a header."""
    rows, _ = rows_with_low_confidence(20, 0.5)
    seen: list[str] = []

    async def desk_answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("X-Model-Suggestion", ""))
        await request.read()
        return web.json_response({"backend": "desk"})

    app = web.Application()
    app.router.add_post("/{tail:.*}", desk_answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    desk = NamedBackend("desk", runner.addresses[0][1])
    config = automation_config(model, desk, "assist", redis_url)
    router = RouterProcess(tmp_path, config).start()
    try:
        answers = await post_all(router.url, rows)
        assert {b for b, _ in answers} == {"desk"}
        assert all(body["backend"] == "desk" for _, body in answers)
        assert len(seen) == 20
        assert all('"label"' in s for s in seen), seen
        assert not any("forged" in s for s in seen), seen
    finally:
        router.stop()
        await runner.cleanup()


async def test_model_down_under_partial_goes_to_the_human(tmp_path: Path, redis_url: str) -> None:
    """partial with the model unreachable: the human answers (when in doubt, a person decides)."""
    async with named_backends("desk") as humans:
        dead = "http://127.0.0.1:9"  # discard port: nothing listens
        config = automation_config(dead, humans["desk"], "partial", redis_url)
        router = RouterProcess(tmp_path, config).start()
        try:
            answers = await post_all(router.url, np.zeros((5, 4)))
            assert {b for b, _ in answers} == {"desk"}
        finally:
            router.stop()


def post_head_then_body(port: int, n: int) -> list[bytes]:
    """The status lines of n POSTs whose head and body go in two sends, 50 ms apart
    (as Python's http.client does for a body it cannot join to the head): the
    model's connect has failed before the body arrives."""
    import socket

    body = b'{"features": [0, 0, 0, 0]}'
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += b"Content-Length: %d\r\n\r\n" % len(body)
    out = []
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(head)
            time.sleep(0.05)
            sock.sendall(body)
            answer = b""
            while b"\r\n\r\n" not in answer and (chunk := sock.recv(4096)):
                answer += chunk
        out.append(answer.split(b"\r\n", 1)[0] + b" " + _backend_of(answer))
    return out


def _backend_of(answer: bytes) -> bytes:
    for line in answer.split(b"\r\n"):
        if line.lower().startswith(b"x-router-backend:"):
            return line.split(b":", 1)[1].strip()
    return b"?"


@pytest.mark.parametrize("level", ["assist", "partial"])
async def test_model_down_the_human_answers_clients_that_send_the_body_late(
    tmp_path: Path, redis_url: str, level: str
) -> None:
    """The model refuses connections; head and body sent apart: every one of 30 requests
    is answered 200 by the human (before: 30 of 30 got 502)."""
    async with named_backends("desk") as humans:
        config = automation_config("http://127.0.0.1:9", humans["desk"], level, redis_url)
        router = RouterProcess(tmp_path, config).start()
        try:
            answers = await asyncio.to_thread(post_head_then_body, router.port, 30)
        finally:
            router.stop()
    assert answers == [b"HTTP/1.1 200 OK desk"] * 30


def _controller(store: RedisStore, config: dict[str, Any]) -> tuple[AutomationController, Any]:
    import yaml

    from router.config.reader import parse

    table = build_table(parse(yaml.safe_dump(config)))
    live = LiveState(store, routes=lambda: ["inspect"])
    return AutomationController(store, Writer(store, live, "test")), table.by_name["inspect"]


async def level_window(store: Any, route: str) -> None:
    """Wait for the leader to open the level's window (the figures count from there)."""
    for _ in range(100):
        if (await store.get_rollout(route)) is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no rollout for {route} after 5 s")


async def _figures_when(ctl: AutomationController, route: Any, n: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for _ in range(30):  # metrics reach the store about once a second
        figures = await ctl.figures(route, time.time())
        if figures.get("model_requests", 0) + figures.get("human_requests", 0) >= n:
            return figures
        await asyncio.sleep(0.2)
    return figures


async def _gzip_model() -> tuple[web.AppRunner, str]:
    """A model that compresses its answers for clients that accept gzip, as a FastAPI
    app with GZipMiddleware or MLServer does (for answers of 500 bytes or more)."""

    async def predict(request: web.Request) -> web.Response:
        await request.read()
        answer = {"label": "fox", "confidence": 0.95, "explanation": "x" * 600}
        response = web.json_response(answer)
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)
        return response

    app = web.Application()
    app.router.add_post("/{tail:.*}", predict)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.mark.parametrize("level", ["assist", "partial"])
async def test_a_model_that_gzips_its_answers_is_read(
    tmp_path: Path, redis_url: str, level: str
) -> None:
    """The client accepts gzip (aiohttp and requests always do) and the model compresses:
    its confident answers are served at partial and suggested at assist (before, every
    one was a `not_json` fallback to the human, never served, never suggested)."""
    runner, url = await _gzip_model()
    seen: list[str] = []

    async def desk_answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("X-Model-Suggestion", ""))
        await request.read()
        return web.json_response({"backend": "desk"})

    app = web.Application()
    app.router.add_post("/{tail:.*}", desk_answer)
    desk_runner = web.AppRunner(app, access_log=None)
    await desk_runner.setup()
    await web.TCPSite(desk_runner, "127.0.0.1", 0).start()
    desk = NamedBackend("desk", desk_runner.addresses[0][1])
    router = RouterProcess(tmp_path, automation_config(url, desk, level, redis_url)).start()
    try:
        answers = await post_all(router.url, np.zeros((10, 4)))
    finally:
        router.stop()
        await runner.cleanup()
        await desk_runner.cleanup()
    if level == "partial":
        assert [b for b, _ in answers] == ["model"] * 10
        assert all(body["label"] == "fox" for _, body in answers)
    else:
        assert [b for b, _ in answers] == ["desk"] * 10
        assert len(seen) == 10
        assert all('"label":"fox"' in s for s in seen), seen
