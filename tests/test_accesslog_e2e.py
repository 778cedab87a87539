"""The access log of a real router process: on by default, rotated by SIGHUP, never a brake.

Each test starts `python -m router` (tests/support/routerproc.py) in front of a
real aiohttp backend and reads what the process wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest

from tests.support.backends import named_backends
from tests.support.routerproc import RouterProcess, free_port, wait_port


def config_for(url: str, **logging: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "backends": {"m": {"url": url}},
        "routes": [
            {
                "name": "all",
                "match": {"path_prefix": "/"},
                "strategy": {"split": {"weights": {"m": 100}}},
            }
        ],
    }
    if logging:
        config["logging"] = logging
    return config


def post_many(port: int, paths: list[str]) -> list[int]:
    """POST each path on one keep-alive connection; the statuses, in order."""
    conn = HTTPConnection("127.0.0.1", port, timeout=10)
    statuses = []
    try:
        for path in paths:
            conn.request("POST", path, body=b'{"features":[1,2]}', headers={"X-Body": "no"})
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
    finally:
        conn.close()
    return statuses


def access_lines(text: str) -> list[dict[str, Any]]:
    """Every line must be whole JSON; the access ones are returned."""
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [e for e in events if e.get("event") == "access"]


def wait_for(check: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


async def test_default_config_logs_every_request_on_stderr(tmp_path: Path) -> None:
    """No logging section at all: one JSON access line per request, among structlog's events."""
    async with named_backends("m") as backends:
        router = RouterProcess(tmp_path, config_for(backends["m"].url)).start()
        try:
            paths = [f"/v2/models/iris/infer?n={i}" for i in range(50)]
            assert await asyncio.to_thread(post_many, router.port, paths) == [200] * 50
            await asyncio.to_thread(wait_for, lambda: len(access_lines(router.log())) >= 50)
        finally:
            router.stop()
        lines = access_lines(router.log())  # the whole log parses line by line: nothing torn
    assert len(lines) == 50
    assert {(x["method"], x["path"], x["status"], x["backend"]) for x in lines} == {
        ("POST", "/v2/models/iris/infer", 200, "m")
    }
    assert len({x["request_id"] for x in lines}) == 50
    assert "features" not in router.log()  # bodies never logged


async def test_sighup_reopens_the_access_file_after_logrotate_renames_it(tmp_path: Path) -> None:
    """Lines before the rename stay in the renamed file; after SIGHUP a new file gets the rest."""
    path = tmp_path / "access.log"
    async with named_backends("m") as backends:
        config = config_for(backends["m"].url, access_file=str(path))
        router = RouterProcess(tmp_path, config).start()
        assert router.proc is not None
        try:
            assert await asyncio.to_thread(post_many, router.port, ["/before"] * 5) == [200] * 5
            await asyncio.to_thread(
                wait_for, lambda: path.exists() and len(path.read_text().splitlines()) == 5
            )
            path.rename(tmp_path / "access.log.1")
            router.proc.send_signal(signal.SIGHUP)
            await asyncio.to_thread(wait_for, path.exists)
            assert await asyncio.to_thread(post_many, router.port, ["/after"] * 3) == [200] * 3
            await asyncio.to_thread(wait_for, lambda: len(path.read_text().splitlines()) == 3)
        finally:
            assert router.stop() == 0
    rotated = access_lines((tmp_path / "access.log.1").read_text())
    assert [x["path"] for x in rotated] == ["/before"] * 5
    assert [x["path"] for x in access_lines(path.read_text())] == ["/after"] * 3
    assert "access" not in [e.get("event") for e in map(json.loads, router.log().splitlines())]


async def test_sighup_to_the_supervisor_reopens_every_workers_file(
    tmp_path: Path, redis_url: str
) -> None:
    """With --workers 2 the supervisor passes SIGHUP on: both workers move to the new file,
    and lines from the two processes never cut into each other."""
    path = tmp_path / "access.log"
    async with named_backends("m") as backends:
        config = config_for(backends["m"].url, access_file=str(path))
        config["state"] = {"url": redis_url}
        router = RouterProcess(tmp_path, config).start("--workers", "2")
        assert router.proc is not None
        try:
            # new connections each time, so both workers (SO_REUSEPORT) get some
            for _ in range(20):
                assert await asyncio.to_thread(post_many, router.port, ["/before"] * 3) == [200] * 3
            await asyncio.to_thread(wait_for, lambda: len(path.read_text().splitlines()) == 60)
            path.rename(tmp_path / "access.log.1")
            router.proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.3)  # both workers handle it
            for _ in range(20):
                assert await asyncio.to_thread(post_many, router.port, ["/after"] * 2) == [200] * 2
            await asyncio.to_thread(
                wait_for, lambda: path.exists() and len(path.read_text().splitlines()) == 40
            )
        finally:
            assert router.stop() == 0
    rotated = access_lines((tmp_path / "access.log.1").read_text())
    fresh = access_lines(path.read_text())
    assert [x["path"] for x in rotated] == ["/before"] * 60
    assert [x["path"] for x in fresh] == ["/after"] * 40
    workers = {x["request_id"][:16] for x in rotated + fresh}  # the per-process id prefix
    assert len(workers) == 2


@pytest.fixture
def stalled_stderr() -> Iterator[tuple[int, int]]:
    """A pipe of one page for the router's stderr, read only when the test says so."""
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):  # the test closed its copy of `w` already
            os.close(fd)


def metrics(admin_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("router_access_log_")
    }


async def test_a_stalled_stderr_pipe_never_stalls_requests(
    tmp_path: Path, stalled_stderr: tuple[int, int]
) -> None:
    """Nobody reads stderr: every request is still answered; the lines that did not fit are
    dropped and counted in router_access_log_dropped_total; what does come out is whole."""
    r, w = stalled_stderr
    port, admin = free_port(), free_port()
    async with named_backends("m") as backends:
        config = config_for(backends["m"].url)
        config |= {"listen": f"127.0.0.1:{port}", "admin": {"listen": f"127.0.0.1:{admin}"}}
        path = tmp_path / "router.yaml"
        path.write_text(json.dumps(config))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "router",
            "--config",
            str(path),
            stdout=subprocess.DEVNULL,
            stderr=w,
        )
        os.close(w)
        got = bytearray()
        try:
            await asyncio.to_thread(wait_port, admin)
            await asyncio.to_thread(wait_port, port)
            long = "/" + "p" * 3000  # 3 KB lines (< PIPE_BUF): past 1 MiB in ~340 requests
            assert await asyncio.to_thread(post_many, port, [long] * 500) == [200] * 500
            await asyncio.sleep(0.3)  # a flush interval or two
            figures = await asyncio.to_thread(metrics, admin)
        finally:
            reader = threading.Thread(target=lambda: got.extend(_read_all(r)))
            reader.start()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 10)
            await asyncio.to_thread(reader.join, 10)
    assert code == 0, got[-3000:].decode(errors="replace")
    assert figures["router_access_log_lines_total"] == 500
    assert figures["router_access_log_dropped_total"] > 0
    lines = access_lines(got.decode())
    assert 0 < len(lines) <= 500 - figures["router_access_log_dropped_total"]


def _read_all(fd: int) -> bytes:
    out = bytearray()
    while chunk := os.read(fd, 1 << 16):
        out += chunk
    return bytes(out)
