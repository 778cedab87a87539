"""routerctl as a subprocess against a real admin API on a loopback port."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from router.core.rollout import Rollout
from router.dataplane.metrics import Metrics
from router.ops.admin import Action, build_admin_app, start_admin
from tests.test_admin import RELOAD_ERROR, TOKEN, make_runtime

ROOT = Path(__file__).resolve().parent.parent


async def _pause(route: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, {"message": f"{route} paused"}


async def _promote(route: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 409, {"error": f"cannot promote {route}: full={body.get('full', False)}"}


async def _history(route: str, n: int) -> list[dict[str, Any]]:
    entry = {"ts": 1_700_000_000.0, "actor": "controller", "event": "abort"}
    return [{**entry, "reason": f"p99 ratio 2.1 > 1.5 (n={n})"}]


def _app() -> web.Application:
    runtime = make_runtime()
    aborted = Rollout(route="fraud", kind="canary", phase="aborted", stable="fraud-a")
    runtime.live = {**runtime.live, "fraud": aborted}
    runtime.reload_failed(RELOAD_ERROR)
    actions: dict[str, Action] = {"pause": _pause, "promote": _promote}
    return build_admin_app(runtime, Metrics(), TOKEN, actions, history=_history)


class AdminThread:
    """The admin app served by its own event loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="admin-for-cli", daemon=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        runner, self.port = await start_admin(_app(), "127.0.0.1", 0)
        self.ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> AdminThread:
        self._thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("admin server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def admin_url() -> Iterator[str]:
    with AdminThread() as server:
        yield f"http://127.0.0.1:{server.port}"


def routerctl(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    """routerctl in a child, with ROUTER_ADMIN_TOKEN as `token` (None: no token at all;
    reads need one too)."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("ROUTER_ADMIN_TOKEN", "ROUTERCTL_ADMIN")
    }
    if token is not None:
        env["ROUTER_ADMIN_TOKEN"] = token
    cmd = [sys.executable, "-m", "router.ops.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)


def test_status_table_shows_reload_error_and_exits_1_on_abort(admin_url: str) -> None:
    """status prints routes, shares, config hash and the full reload error; aborted -> exit 1."""
    done = routerctl("--admin", admin_url, "status")
    assert done.returncode == 1, done.stderr
    out = done.stdout
    assert RELOAD_ERROR in out
    assert "abc123def456" in out
    assert "iris-v1 75%, iris-v2 25%" in out
    assert "aborted" in out
    assert "store   memory  ok" in out


def test_status_of_one_route_and_json(admin_url: str) -> None:
    """status ROUTE shows only that route (exit 0 when not aborted); --json is the API's JSON."""
    done = routerctl("--admin", admin_url, "status", "iris")
    assert done.returncode == 0, done.stderr
    assert "progressing" in done.stdout
    assert "fraud" not in done.stdout
    as_json = routerctl("--admin", admin_url, "status", "iris", "--json")
    assert json.loads(as_json.stdout)["weights"] == {"iris-v1": 75.0, "iris-v2": 25.0}
    unknown = routerctl("--admin", admin_url, "status", "nope")
    assert unknown.returncode == 1
    assert "unknown route" in unknown.stderr


def test_action_needs_token_and_prints_message(admin_url: str) -> None:
    """pause with the token prints the result's message (exit 0); without it exit 1, 401 text."""
    done = routerctl("--admin", admin_url, "pause", "iris", token=TOKEN)
    assert (done.returncode, done.stdout.strip()) == (0, "iris paused")
    refused = routerctl("--admin", admin_url, "pause", "iris", token=None)
    assert refused.returncode == 1
    assert "bearer token" in refused.stderr


def test_action_flags_and_refusals(admin_url: str) -> None:
    """--full reaches the action; a 4xx answer or an unknown action exits 1 with the error."""
    done = routerctl("--admin", admin_url, "--token", TOKEN, "promote", "iris", "--full")
    assert done.returncode == 1
    assert "cannot promote iris: full=True" in done.stderr
    missing = routerctl("--admin", admin_url, "--token", TOKEN, "retry", "iris")
    assert missing.returncode == 1
    assert "unknown action 'retry'" in missing.stderr


def test_history_lines(admin_url: str) -> None:
    """history prints one line per entry: time, actor, event, reason."""
    done = routerctl("--admin", admin_url, "history", "iris", "-n", "3")
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith("2023-11-14 22:13:20Z")
    assert "controller  abort  p99 ratio 2.1 > 1.5 (n=3)" in line


def test_unreachable_admin_and_usage_exit_2() -> None:
    """A dead admin URL prints 'cannot reach the admin API at URL' and exits 2; so does no verb."""
    done = routerctl("--admin", "http://127.0.0.1:1", "status")
    assert done.returncode == 2
    assert "cannot reach the admin API at http://127.0.0.1:1" in done.stderr
    assert routerctl().returncode == 2


def test_validate_file(tmp_path: Path) -> None:
    """validate prints OK for a good file; each error with its path and exit 1 for a bad one."""
    good = tmp_path / "good.yaml"
    head = "backends:\n  a: {url: http://127.0.0.1:8101}\n  b: {url: http://127.0.0.1:8102}\n"
    route = "routes:\n  - {name: r, match: {path_prefix: /r}, strategy: {split: {weights: %s}}}\n"
    good.write_text(head + route % "{a: 90, b: 10}")
    done = routerctl("validate", str(good))
    assert (done.returncode, done.stdout.strip()) == (0, f"OK: {good}")
    bad = tmp_path / "bad.yaml"
    bad.write_text(head + route % "{a: 90, zz: 10}")
    done = routerctl("validate", str(bad))
    assert done.returncode == 1
    assert "routes[0].strategy.split.weights" in done.stdout


def test_routerctl_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    """`routerctl feedback ROUTE | head` printed a BrokenPipeError traceback once head
    had its lines; like any Unix tool it now ends quietly on a closed pipe."""
    routes = [
        {"name": f"r{i}", "match": {"path_prefix": f"/r{i}"},
         "strategy": {"split": {"weights": {"nope": 140}}}}
        for i in range(3000)
    ]  # fmt: skip
    config = tmp_path / "many.yaml"
    config.write_text(json.dumps({"backends": {}, "routes": routes}))
    cli = [sys.executable, "-m", "router.ops.cli", "validate", str(config)]
    with subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline()  # head -1
        proc.stdout.close()
        _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err, err.decode()
    assert b"BrokenPipeError" not in err, err.decode()
