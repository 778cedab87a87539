"""A pod's life on real router processes: SIGTERM under load loses no request.

Kubernetes sends SIGTERM and, at the same moment, starts taking the pod out of
its Service's endpoints; clients keep arriving for seconds. The router must
turn /readyz to 503 at once, keep serving for `shutdown.delay`, then stop
accepting and finish what it has, answering every request it began to read.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.backends import NamedBackend, named_backends
from tests.support.routerproc import RouterProcess, free_port, wait_port

PARTIAL_HEAD = b"POST /predict HTTP/1.1\r\nHost: x\r\n"
REST = b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def lifecycle_config(backend: NamedBackend, probes: int, **shutdown: Any) -> dict[str, Any]:
    return {
        "logging": {"access_sample": 0},
        "probes": {"listen": f"127.0.0.1:{probes}"},
        "shutdown": shutdown,
        "limits": {"drain_timeout": "5s"},
        "backends": {"a": {"url": backend.url}},
        "routes": [
            {
                "name": "predict",
                "match": {"path_prefix": "/"},
                "strategy": {"split": {"weights": {"a": 100}}},
            }
        ],
    }


@asynccontextmanager
async def router_with(
    tmp_path: Path, delay: str, drain: str = "5s", backend_delay: float = 0.0
) -> AsyncIterator[tuple[RouterProcess, int]]:
    async with named_backends("a") as backends:
        backends["a"].delay = backend_delay
        probes = free_port()
        config = lifecycle_config(backends["a"], probes, delay=delay)
        config["limits"] = {"drain_timeout": drain}
        router = RouterProcess(tmp_path, config).start()
        wait_port(probes)
        try:
            yield router, probes
        finally:
            router.stop(signal.SIGKILL)


async def keep_sending(url: str, until: float, outcomes: Counter[str]) -> None:
    """POST in a loop until the loop clock passes `until`; count each outcome."""
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        while loop.time() < until:
            try:
                async with session.post(url + "/predict", json={"x": 1}) as resp:
                    await resp.read()
                    outcomes[str(resp.status)] += 1
            except aiohttp.ClientError as exc:
                outcomes[f"{type(exc).__name__}: {exc} at {loop.time() - until:+.3f}"] += 1


async def watch_readyz(port: int, until: float, seen: list[tuple[float, int]]) -> None:
    """GET /readyz every 5 ms on a fresh connection; record (loop time, status)."""
    loop = asyncio.get_running_loop()
    url = f"http://127.0.0.1:{port}/readyz"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        while loop.time() < until:
            try:
                async with s.get(url) as resp:
                    seen.append((loop.time(), resp.status))
            except aiohttp.ClientError:
                seen.append((loop.time(), 0))
            await asyncio.sleep(0.005)


async def partial_request(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(PARTIAL_HEAD)
    await writer.drain()
    return reader, writer


async def finish(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> bytes:
    """Send the rest of the request; everything the router sends until it closes."""
    reader, writer = conn
    writer.write(REST)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536 * 4), 5)
    while chunk := await asyncio.wait_for(reader.read(65536), 5):
        data += chunk
    writer.close()
    return data


def status_and_headers(raw: bytes) -> tuple[int, dict[str, str]]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    lines = head.split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers


async def wait_exit(router: RouterProcess) -> int | None:
    """The exit code, waiting up to 10 s for it (in a thread: the loop runs on)."""
    proc = router.proc
    assert proc is not None
    try:
        return await asyncio.to_thread(proc.wait, 10)
    except subprocess.TimeoutExpired:
        return None


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def test_sigterm_under_load_loses_nothing(tmp_path: Path) -> None:
    """delay 2 s: clients sending for 2 s after SIGTERM all get 200; /readyz is 503
    within 100 ms; requests half received at SIGTERM (their rest sent during the
    delay, and after it) are answered with Connection: close; then exit 0."""
    async with router_with(tmp_path, delay="2s") as (router, probes):
        assert router.proc is not None
        loop = asyncio.get_running_loop()
        outcomes: Counter[str] = Counter()
        seen: list[tuple[float, int]] = []
        start = loop.time()
        watcher = asyncio.create_task(watch_readyz(probes, start + 3.0, seen))
        await asyncio.sleep(0.3)
        early, late = await partial_request(router.port), await partial_request(router.port)
        clients = [
            asyncio.create_task(keep_sending(router.url, start + 0.5 + 2.0, outcomes))
            for _ in range(6)
        ]
        await asyncio.sleep(0.5 - (loop.time() - start))
        sigterm_at = loop.time()
        router.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        early_answer = await finish(early)
        await asyncio.gather(*clients)  # they stop 2 s after SIGTERM
        await asyncio.sleep(sigterm_at + 2.3 - loop.time())
        stopped_accepting = await refused(router.port)
        late_answer = await finish(late)
        code = await wait_exit(router)
        await watcher
    assert outcomes["200"] > 200, outcomes  # the load was real
    assert set(outcomes) == {"200"}, outcomes
    first_503 = min(t for t, status in seen if status == 503)
    assert 0 <= first_503 - sigterm_at < 0.1, first_503 - sigterm_at
    assert all(status == 200 for t, status in seen if t < sigterm_at)
    for answer in (early_answer, late_answer):
        status, headers = status_and_headers(answer)
        assert status == 200, answer
        assert headers["connection"] == "close"
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["backend"] == "a"
    assert stopped_accepting
    assert code == 0, router.log()


async def test_drain_timeout_answers_what_is_left_with_503(tmp_path: Path) -> None:
    """No delay, drain 1 s: a request whose backend is slower than the drain and a
    half-received one both get 503 'router shutting down' instead of a silent close."""
    async with router_with(tmp_path, delay="0s", drain="1s", backend_delay=4.0) as (router, _):
        assert router.proc is not None
        async with aiohttp.ClientSession() as session:
            slow = asyncio.create_task(session.post(router.url + "/predict", json={}))
            partial = await partial_request(router.port)
            await asyncio.sleep(0.3)  # the slow one is at the backend
            router.proc.send_signal(signal.SIGTERM)
            resp = await slow
            body = await resp.json()
            _, writer = partial
            answer = await asyncio.wait_for(partial[0].read(65536), 5)
            writer.close()
        code = await wait_exit(router)
    assert resp.status == 503
    assert body["error"] == "router shutting down", body
    assert body["backend"] == "a"
    status, headers = status_and_headers(answer)
    assert status == 503, answer
    assert headers["connection"] == "close"
    assert code == 0, router.log()


async def test_sigint_skips_the_delay(tmp_path: Path) -> None:
    """Ctrl-C in a terminal: nobody routes to it through endpoints; no delay."""
    async with router_with(tmp_path, delay="30s") as (router, _):
        assert router.proc is not None
        before = time.monotonic()
        router.proc.send_signal(signal.SIGINT)
        code = await wait_exit(router)
        took = time.monotonic() - before
    assert code == 0
    assert took < 10


async def test_probes_listener_serves_health_readiness_and_metrics_only(tmp_path: Path) -> None:
    """/healthz, /readyz, /metrics answer on the probes port; the admin API's state and
    changes do not."""
    async with router_with(tmp_path, delay="0s") as (router, probes):
        base = f"http://127.0.0.1:{probes}"
        async with aiohttp.ClientSession() as session:
            await (await session.post(router.url + "/predict", json={})).read()
            got = {}
            for path in ("/healthz", "/readyz", "/metrics", "/v1/status", "/dashboard"):
                async with session.get(base + path) as resp:
                    got[path] = (resp.status, await resp.text())
            async with session.post(base + "/v1/routes/predict/pause") as resp:
                got["POST"] = (resp.status, "")
    assert got["/healthz"][0] == 200
    assert json.loads(got["/readyz"][1]) == {"status": "ready"}
    served = 'router_requests_total{route="predict",backend="a",role="split",code="200"} 1'
    assert served in got["/metrics"][1]
    assert got["/v1/status"][0] == 404
    assert got["/dashboard"][0] == 404
    assert got["POST"][0] in (404, 405)
