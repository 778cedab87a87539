"""The example model server: answers, determinism per version, fault flags, health.

Each test starts a real aiohttp server on an ephemeral loopback port and talks
to it over real sockets.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from bench import procstat, wrk
from examples.model_server import LABELS, LinearModel, ModelOptions, start_model_server

Serve = Callable[[ModelOptions], Awaitable[str]]
FEATURES: dict[str, Any] = {"features": [0.1, -0.2, 0.3, 0.4, 0.5, -0.6, 0.7, 0.8]}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(opts: ModelOptions) -> str:
        runner, port = await start_model_server(opts)
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def post(s: aiohttp.ClientSession, url: str, body: Any = FEATURES) -> tuple[int, Any]:
    async with s.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def test_predict_shape(serve: Serve, session: aiohttp.ClientSession) -> None:
    """/predict answers a label, probabilities summing to 1, the max as confidence, the version."""
    base = await serve(ModelOptions(version="v1"))
    status, body = await post(session, base + "/predict")
    assert status == 200
    assert body["label"] in LABELS
    assert body["model"] == "v1"
    assert len(body["probabilities"]) == len(LABELS)
    assert sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    assert body["confidence"] == max(body["probabilities"])
    assert body["label"] == LABELS[body["probabilities"].index(body["confidence"])]


async def test_v2_infer_path_matches_predict(serve: Serve, session: aiohttp.ClientSession) -> None:
    """The KServe-V2-style path accepts inputs[0].data and gives the same answer as /predict."""
    base = await serve(ModelOptions(version="v1"))
    v2_body = {
        "inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP64", "data": FEATURES["features"]}]
    }
    _, plain = await post(session, base + "/predict")
    status, infer = await post(session, base + "/v2/models/iris/infer", v2_body)
    assert status == 200
    assert infer == plain


async def test_bad_json_is_400(serve: Serve, session: aiohttp.ClientSession) -> None:
    """Malformed JSON and a body without features both get a 400 with a JSON error."""
    base = await serve(ModelOptions())
    async with session.post(base + "/predict", data=b"{nope") as resp:
        assert resp.status == 400
        assert "error" in await resp.json()
    status, body = await post(session, base + "/predict", {"features": ["a", None]})
    assert status == 400
    assert "error" in body


def test_same_version_same_weights_and_versions_mostly_agree() -> None:
    """A version's model is reproducible; v1 and v2 agree on most inputs but not all."""
    rng = np.random.default_rng(7)
    inputs = rng.normal(size=(500, 8))
    a, a2, b = LinearModel("v1"), LinearModel("v1"), LinearModel("v2")
    labels_a = [int(a.predict(x).argmax()) for x in inputs]
    assert labels_a == [int(a2.predict(x).argmax()) for x in inputs]
    agree = sum(la == int(b.predict(x).argmax()) for la, x in zip(labels_a, inputs, strict=True))
    assert 0.6 * len(inputs) < agree < len(inputs)


async def test_any_feature_length(serve: Serve, session: aiohttp.ClientSession) -> None:
    """Inputs shorter or longer than the weight table are accepted."""
    base = await serve(ModelOptions())
    for n in (1, 4, 100):
        status, body = await post(session, base + "/predict", {"features": [0.5] * n})
        assert status == 200, body


async def test_error_rate_share(serve: Serve, session: aiohttp.ClientSession) -> None:
    """--error-rate 0.25 answers 500 on about a quarter of 400 requests."""
    base = await serve(ModelOptions(error_rate=0.25, seed=1))
    statuses = [(await post(session, base + "/predict"))[0] for _ in range(400)]
    errors = statuses.count(500)
    assert statuses.count(200) + errors == 400
    assert 60 <= errors <= 140


async def test_latency_added(serve: Serve, session: aiohttp.ClientSession) -> None:
    """--latency-ms delays every answer by at least that long."""
    base = await serve(ModelOptions(latency_ms=150))
    t0 = time.monotonic()
    for _ in range(3):
        assert (await post(session, base + "/predict"))[0] == 200
    assert time.monotonic() - t0 >= 3 * 0.150


async def test_wrong_rate_changes_labels(serve: Serve, session: aiohttp.ClientSession) -> None:
    """--wrong-rate 0.5 gives a label other than the model's on about half the requests."""
    base = await serve(ModelOptions(wrong_rate=0.5, seed=3))
    _, truth = await post(session, (await serve(ModelOptions())) + "/predict")
    labels = [(await post(session, base + "/predict"))[1]["label"] for _ in range(200)]
    wrong = sum(label != truth["label"] for label in labels)
    assert 60 <= wrong <= 140


async def test_constant_label(serve: Serve, session: aiohttp.ClientSession) -> None:
    """--constant-label answers that label whatever the input."""
    base = await serve(ModelOptions(constant_label="virginica"))
    for n in range(1, 6):
        _, body = await post(session, base + "/predict", {"features": [float(n)] * n})
        assert body["label"] == "virginica"


async def raw_request(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"features":[1,2,3]}'
    head = b"POST /predict HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
    writer.write(head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    try:
        return await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()
        await writer.wait_closed()


async def test_drop_closes_connection_without_answer() -> None:
    """--drop-rate 1 closes the connection before any response byte."""
    runner, port = await start_model_server(ModelOptions(drop_rate=1.0))
    try:
        assert await raw_request(port) == b""
    finally:
        await runner.cleanup()


async def test_drop_rate_zero_answers_on_raw_socket() -> None:
    """The raw-socket probe does see an answer when nothing is dropped (the probe can fail)."""
    runner, port = await start_model_server(ModelOptions(drop_rate=0.0))
    try:
        assert (await raw_request(port)).startswith(b"HTTP/1.1 200")
    finally:
        await runner.cleanup()


async def test_health(serve: Serve, session: aiohttp.ClientSession) -> None:
    """/health is 200 with the version, and 503 under --unhealthy."""
    ok = await serve(ModelOptions(version="v7"))
    bad = await serve(ModelOptions(unhealthy=True))
    async with session.get(ok + "/health") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok", "model": "v7"}
    async with session.get(bad + "/health") as resp:
        assert resp.status == 503


def test_demo_refuses_taken_port(tmp_path: Path) -> None:
    """The demo exits 1 naming the port when the router's port is already taken."""
    with socket.socket() as busy, socket.socket() as spare:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        spare.bind(("127.0.0.1", 0))
        port, admin = busy.getsockname()[1], spare.getsockname()[1]
        config = tmp_path / "demo.yaml"
        config.write_text(
            f"listen: 127.0.0.1:{port}\nadmin: {{listen: 127.0.0.1:{admin}}}\n"
            "backends: {b: {url: http://127.0.0.1:8101}}\n"
            "routes: [{name: all, match: {path_prefix: /},\n"
            "          strategy: {split: {weights: {b: 100}}}}]\n"
        )
        proc = subprocess.run(
            [sys.executable, "-m", "examples.demo", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert proc.returncode == 1
    assert f"port {port} (router) is already in use" in proc.stderr


WRK_REPORT = """Running 10s test @ http://127.0.0.1:8080/predict
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10ms  410.00us   9.26ms   80.03%
  Latency Distribution
     50%  980.00us
     75%    1.20ms
     90%    1.50ms
     99%    2.30s
  240013 requests in 10.10s, 38.46MB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  23763.66
Transfer/sec:      3.80MB
"""


def test_wrk_report_parsed_with_units_and_errors() -> None:
    """The bench reads req/s, p50/p99 across µs/ms/s units and counts every kind of error."""
    result = wrk.parse(WRK_REPORT)
    assert result.requests == 240013
    assert result.seconds == pytest.approx(10.1)
    assert result.rps == pytest.approx(23763.66)
    assert result.p50_ms == pytest.approx(0.98)
    assert result.p99_ms == pytest.approx(2300.0)
    assert (result.non2xx, result.socket_errors, result.errors) == (7, 6, 13)
    with pytest.raises(wrk.WrkError):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused")


def test_procstat_tree_sees_children() -> None:
    """CPU and RSS of a process tree include a busy child's CPU and memory."""
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    child = subprocess.Popen([sys.executable, "-c", busy + "time.sleep(5)"])
    try:
        deadline = time.monotonic() + 5
        while procstat.cpu_seconds(child.pid) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
        me = os.getpid()
        assert child.pid in procstat.tree(me)
        assert procstat.tree_cpu_seconds(me) >= procstat.cpu_seconds(me) + 0.25
        assert procstat.tree_rss_bytes(me) > procstat.rss_bytes(me)
    finally:
        child.kill()
        child.wait()
