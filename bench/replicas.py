"""Propagation across replicas: how long until EVERY router routes the new way.

Three router processes share one redis-server (started here on a free port,
no persistence). Two routes: `fraud` (blue/green, no watch) and `iris` (a
canary at 50 %). Each trial posts one command to one replica's admin API
(round robin over the replicas) and, from the moment its answer arrives, polls
every replica's `GET /v1/routes/NAME` in parallel in a tight loop until each
shows the new state; the trial's figure is when the LAST replica showed it.

- blue/green: `switch` (alternating colours); the state is the new active colour.
- canary: `rollback` during the ramp (every replica must send 0 % to the
  candidate); the state is phase `aborted`; a `retry` between trials restarts
  the ramp and is not measured.

The admin replica installs its own write before answering, so its figure is
~0; the others follow the pub/sub message (one GET of one key). Polling the
admin API measures the snapshot the data plane reads, at a resolution of one
admin round trip (~0.3-1 ms). Run alone: `python -m bench.replicas`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from bench import targets

if TYPE_CHECKING:  # bench.scenarios registers this scenario: import it lazily, no cycle
    from bench.scenarios import Context, Section

REPLICAS = 3
TRIALS = 20
POLL_LIMIT = 2.0  # seconds a trial may take before it counts as lost
TOKEN = os.environ.get("ROUTER_ADMIN_TOKEN", "bench-token")  # what start_router gives

_YAML = """listen: 127.0.0.1:{{port}}
admin: {{{{listen: 127.0.0.1:{{admin_port}}}}}}
logging: {{{{access_sample: 0}}}}
state: {{{{url: "redis://127.0.0.1:{redis_port}/0", poll_interval: 5s}}}}
controller: {{{{interval: 200ms, lease_ttl: 2s}}}}
backends:
  blue: {{{{url: "http://127.0.0.1:{{backend_port}}", health: /predict}}}}
  green: {{{{url: "http://127.0.0.1:{{backend_port}}", health: /predict}}}}
routes:
  - name: fraud
    match: {{{{path_prefix: /fraud}}}}
    strategy: {{{{bluegreen: {{{{blue: blue, green: green, watch: {{{{window: 0}}}}}}}}}}}}
  - name: iris
    match: {{{{path_prefix: /}}}}
    strategy:
      canary:
        stable: blue
        candidate: green
        steps: [{{{{weight: 50, pause: 1h}}}}, {{{{weight: 100}}}}]
"""

Want = Callable[[dict[str, Any]], bool]


@contextmanager
def redis_server(workdir: Path) -> Iterator[int]:
    """A throwaway redis-server on a free port; yields the port."""
    port = targets.free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(workdir)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        _wait_pong(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_pong(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    raise targets.StartError(f"redis-server on {port} did not answer PING")


class Fleet:
    """The replicas' admin APIs, asked over one keep-alive session."""

    def __init__(self, session: aiohttp.ClientSession, admins: list[str]) -> None:
        self.session = session
        self.admins = admins

    async def rollout(self, admin: str, route: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}  # admin reads need a token too
        async with self.session.get(f"{admin}/v1/routes/{route}", headers=headers) as resp:
            body: dict[str, Any] = await resp.json()
        return body.get("rollout") or {}

    async def command(self, admin: str, route: str, verb: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        url = f"{admin}/v1/routes/{route}/{verb}"
        async with self.session.post(url, json={"actor": "bench"}, headers=headers) as resp:
            body: dict[str, Any] = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"{verb} {route} answered {resp.status}: {body}")
        return body

    async def seen(self, admin: str, route: str, want: Want, t0: float) -> float:
        """Seconds after t0 when this replica first showed the wanted state."""
        while time.perf_counter() - t0 < POLL_LIMIT:
            if want(await self.rollout(admin, route)):
                return time.perf_counter() - t0
        return float("inf")

    async def trial(self, i: int, route: str, verb: str, want: Want) -> tuple[float, float]:
        """One command; seconds until the last replica shows its effect, counted from
        the command's answer and from its sending (that one includes checks and the write)."""
        sent = time.perf_counter()
        await self.command(self.admins[i % len(self.admins)], route, verb)
        t0 = time.perf_counter()
        found = await asyncio.gather(*(self.seen(a, route, want, t0) for a in self.admins))
        return max(found), max(found) + t0 - sent

    async def settle(self, route: str, want: Want) -> None:
        for admin in self.admins:
            await self.seen(admin, route, want, time.perf_counter())


def field_is(key: str, value: str) -> Want:
    return lambda rollout: rollout.get(key) == value


Trials = list[tuple[float, float]]


async def bluegreen_trials(fleet: Fleet, trials: int) -> Trials:
    await fleet.settle("fraud", field_is("phase", "steady"))
    out = []
    for i in range(trials):
        current = (await fleet.rollout(fleet.admins[0], "fraud")).get("active", "blue")
        target = "green" if current == "blue" else "blue"
        out.append(await fleet.trial(i, "fraud", "switch", field_is("active", target)))
        await asyncio.sleep(0.05)
    return out


async def canary_trials(fleet: Fleet, trials: int) -> Trials:
    out = []
    for i in range(trials):
        await fleet.settle("iris", field_is("phase", "progressing"))
        out.append(await fleet.trial(i, "iris", "rollback", field_is("phase", "aborted")))
        await fleet.command(fleet.admins[0], "iris", "retry")
    return out


async def measure(admins: list[str], trials: int) -> tuple[Trials, Trials]:
    async with aiohttp.ClientSession() as session:
        fleet = Fleet(session, admins)
        return await bluegreen_trials(fleet, trials), await canary_trials(fleet, trials)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def _backend_port(ctx: Context, stack: list[targets.Target]) -> int:
    direct = ctx.targets.get("direct")
    if direct is not None:
        return direct.port
    backend = targets.start_backend(ctx.workdir)
    stack.append(backend)
    return backend.port


def replica_propagation(ctx: Context) -> Section:
    from bench.scenarios import Section

    sec = Section(
        f"replica propagation: {REPLICAS} routers on one Redis, {TRIALS} commands each",
        ["command", "p50 ms", "p99 ms", "max ms", "lost", "p99 from POST sent ms"],
    )
    if shutil.which("redis-server") is None:
        sec.lines.append("skipped: redis-server not installed")
        return sec
    started: list[targets.Target] = []
    try:
        with redis_server(ctx.workdir) as redis_port:
            port = _backend_port(ctx, started)
            config = _YAML.format(redis_port=redis_port)
            for i in range(REPLICAS):
                replica = targets.start_router(ctx.workdir, port, name=f"replica{i}", config=config)
                started.append(replica)
            admins = [f"http://127.0.0.1:{t.extra['admin_port']}" for t in started[-REPLICAS:]]
            bg, canary = asyncio.run(measure(admins, TRIALS))
    finally:
        for target in reversed(started):
            target.stop()
    _report(sec, "bluegreen switch", bg, 50.0)
    _report(sec, "canary rollback", canary, 100.0)
    return sec


def _report(sec: Section, name: str, trials: Trials, limit_ms: float) -> None:
    from bench.scenarios import Check

    values = [after_answer for after_answer, _ in trials]
    lost = sum(1 for v in values if v == float("inf"))
    p50, p99 = _pct(values, 0.5), _pct(values, 0.99)
    from_sent = _pct([whole for _, whole in trials], 0.99)
    done = [v * 1000 for v in values if v != float("inf")]
    top = f"{max(done, default=0.0):.2f}"
    sec.rows.append([name, f"{p50:.2f}", f"{p99:.2f}", top, str(lost), f"{from_sent:.2f}"])
    sec.data[name] = {
        "p50_ms": p50,
        "p99_ms": p99,
        "p99_from_sent_ms": from_sent,
        "samples_ms": done,
        "lost": lost,
    }
    sec.checks.append(Check(f"{name}: last replica follows, p99", p99, limit_ms, "ms"))
    sec.lines.append(f"{name}: p50 {p50:.2f} ms, p99 {p99:.2f} ms (target p99 ≤ {limit_ms:g} ms)")


def main() -> int:
    from bench.run import check_line, print_section
    from bench.scenarios import Context, Settings

    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        sec = replica_propagation(Context(Settings(), Path(tmp), {}))
    print_section(sec)
    for check in sec.checks:
        print(check_line(check))
    print(json.dumps(sec.data, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
