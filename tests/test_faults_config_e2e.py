"""Bad config edits under load: refused with their path, and nobody waits for them.

A router process serves 100 requests a second while twenty bad versions of its
config.yaml are written over it in turn, an alias bomb among them. Each is refused
with its path (routerctl status shows it), the old config keeps serving, no
request fails, and the bomb costs no memory: the file is read and parsed in a
worker thread with caps (router/config/yamlload.py, router/config/reload.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support.backends import named_backends
from tests.support.routerproc import RouterProcess
from tests.test_bluegreen_e2e import TimedLoad, routerctl
from tests.test_config_bounds import alias_bomb

RATE = 100


def good(port: int) -> dict[str, Any]:
    return {
        "logging": {"access_sample": 0},
        "backends": {"m": {"url": f"http://127.0.0.1:{port}"}},
        "routes": [
            {
                "name": "r",
                "match": {"path_prefix": "/"},
                "strategy": {"split": {"weights": {"m": 100}}},
            }
        ],
    }


def bad_edits(port: int, admin_port: int) -> list[tuple[str, str]]:
    """(file text, a fragment of the refusal it must get)."""
    ok = yaml.safe_dump(good(port), sort_keys=False)

    def edited(**section: Any) -> str:
        return yaml.safe_dump({**good(port), **section}, sort_keys=False)

    route = good(port)["routes"][0]
    return [
        (alias_bomb(), "holds more than 1,000,000 values"),
        ("x: " + "[" * 10_000 + "]" * 10_000, "invalid YAML"),
        ("x: &a [1, *a]\n" + ok, "a YAML alias refers to itself"),
        (ok + "backends: {}\n", "duplicate key 'backends'"),
        (ok + "listen: [1, 2]\n", "listen: must be host:port"),
        (
            edited(admin={"listen": f"127.0.0.1:{admin_port}", "token_file": "/nonexistent"}),
            "admin.token_file: cannot read file",
        ),
        (edited(headers={"request_id": "Host"}), "headers.request_id: must not be a header"),
        (edited(limits={"max_body": 10**30}), "limits.max_body: must be at most 1GiB"),
        (edited(limits={"header_timeout": 1e308}), "limits.header_timeout: must be 1ms..1h"),
        (edited(controller={"interval": "1ms"}), "controller.interval: must be 10ms..1h"),
        (
            edited(routes=[{**route, "strategy": {"split": {"weights": {"m": 140}}}}]),
            "must be 0..100",
        ),
        (edited(routes=[{**route, "strategy": {"split": {"weights": {"nope": 100}}}}]), "nope"),
        (edited(routes=[{**route, "strategy": {"canary": {}}}]), "routes[0].strategy.canary"),
        (edited(routes=[]), "routes: must list at least one route"),
        (
            edited(backends={"m": {"url": "ftp://x"}}),
            "backends.m.url: scheme must be http or https",
        ),
        (edited(routes=[{**route, "match": {"path_prefix": "no-slash"}}]), "path_prefix"),
        (
            edited(routes=[{**route, "sticky": {"header": "Content-Length"}}]),
            "sticky.header: must not be a header",
        ),
        (edited(state={"url": "http://redis"}), "state.url: scheme must be one of"),
        ("{{{ not yaml", "invalid YAML"),
        ("# " + "x" * (9 * 1024 * 1024), "more than the 8,388,608 allowed"),
    ]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def refusal(router: RouterProcess) -> str:
    status = router.get_json("/v1/status")
    return str(status["config"]["last_reload_error"] or "")


async def wait_refused(router: RouterProcess, fragment: str, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if fragment in await asyncio.to_thread(refusal, router):
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"never refused with {fragment!r}: {refusal(router)!r}")


def p99(tooks: list[float]) -> float:
    ordered = sorted(tooks)
    return ordered[int(0.99 * (len(ordered) - 1))] * 1000


async def test_twenty_bad_edits_under_load_fail_no_request(tmp_path: Path) -> None:
    """Each edit refused with its path while 100 req/s are served from the old config;
    the alias bomb refused at once with no memory growth."""
    async with named_backends("m") as backends:
        router = RouterProcess(tmp_path, good(backends["m"].port)).start()
        load = TimedLoad([router.url + "/x"], RATE)
        took: dict[int, float] = {}
        try:
            edits = bad_edits(backends["m"].port, router.admin_port)
            runner = asyncio.create_task(load.run(limit=60))
            await asyncio.sleep(1.0)
            t_edits = time.monotonic()
            assert router.proc is not None
            rss_before = rss_mb(router.proc.pid)
            for i, (text, fragment) in enumerate(edits):
                staging = tmp_path / "edit.tmp"
                staging.write_text(text)
                os.replace(staging, router.config_path)
                took[i] = await wait_refused(router, fragment, within=5)
                if i == 0:
                    bomb_rss = rss_mb(router.proc.pid) - rss_before
            shown = await asyncio.to_thread(routerctl, router, "status")
            t_done = time.monotonic()
            await asyncio.sleep(0.5)
            load.stop()
            await runner
        finally:
            router.stop()
    before = [h.took for h in load.hits if h.sent < t_edits]
    during = [h.took for h in load.hits if t_edits <= h.sent < t_done]
    print(
        f"\n{len(edits)} bad edits in {t_done - t_edits:.1f}s; alias bomb refused in "
        f"{took[0] * 1000:.0f} ms, RSS +{bomb_rss:.1f} MB; p99 before {p99(before):.1f} ms, "
        f"during {p99(during):.1f} ms over {len(during)} requests"
    )
    assert load.failed() == []
    assert len(during) > 0.5 * RATE * (t_done - t_edits)
    assert {h.backend for h in load.hits} == {"m"}
    assert bomb_rss <= 50
    assert "REFUSED" in shown.stdout
    assert "more than the 8,388,608 allowed" in shown.stdout
