"""Two scenarios with each proxy as users run it: an aiohttp model server behind, and 2 workers.

`model_server_stand_in`: the fixed-body backend of the other scenarios costs
a few µs a request, so the proxies are what it measures; a real model server
costs far more. Here examples/model_server.py (aiohttp, a softmax over the
posted features) answers behind nginx (default access log) and the router
(default config), A B C alternating, so the figures are the ones a user in
front of a Python model server would see.

`workers_scale`: `router --workers 2` (which needs Redis: a throwaway
redis-server) against nginx `worker_processes 2`, both with their default
access log, on the shared fixed-body backend, beside the 1-worker targets. On
two cores wrk, the backend and both workers share the cores, so this shows
how much of the second core each one turns into requests, not how they scale
on a bigger machine.
"""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

from bench import targets
from bench.replicas import redis_server

if TYPE_CHECKING:  # bench.scenarios registers these scenarios: import it lazily, no cycle
    from bench.scenarios import Context, Section

_WORKERS_YAML = targets.DEFAULT_YAML.replace(
    "backends:", 'state: {{url: "redis://127.0.0.1:{redis_port}/0"}}\nbackends:'
)


def _table(ctx: Context, title: str, pair: dict[str, targets.Target]) -> Section:
    from bench.scenarios import Context, Load, Section, _row, alternate

    s = ctx.settings
    sub = Context(s, ctx.workdir, pair, ctx.notes)
    med = alternate(sub, s.runs, Load(s.threads, s.connections, s.duration, s.warmup))
    sec = Section(title, ["target", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "errors"])
    sec.rows += [_row(name, m) for name, m in med.items()]
    sec.data = dict(med)
    return sec


def _ratio_line(sec: Section, name: str, a: str, b: str) -> float | None:
    from bench.scenarios import _fmt, _ratio

    med = sec.data
    value = _ratio(med.get(a, {}).get("rps"), med.get(b, {}).get("rps"))
    sec.data.setdefault("ratios", {})[name] = value
    sec.lines.append(f"{a}/{b} req/s: {_fmt(value, 'x')}")
    return value


def model_server_stand_in(ctx: Context) -> Section:
    """direct, nginx (default access log) and the router (default config) before aiohttp."""
    from bench.scenarios import Check, Section

    title = "against an aiohttp model server (examples/model_server.py), each proxy's defaults"
    if "nginx" not in "".join(ctx.targets):
        return Section(title, ["target"], lines=["skipped: nginx not installed"])
    port = targets.free_port()
    cmd = [sys.executable, "-m", "examples.model_server", "--port", str(port)]
    model = _spawn_model(ctx, cmd, port)
    started = [model]
    try:
        started.append(
            targets.start_nginx_proxy(ctx.workdir, port, access_log=True, name="nginx-log-model")
        )
        started.append(
            targets.start_router(
                ctx.workdir, port, name="router-default-model", config=targets.DEFAULT_YAML
            )
        )
        pair = {"direct": model, "nginx-log": started[1], "router-default": started[2]}
        sec = _table(ctx, f"{title}, median of {ctx.settings.runs}", pair)
    finally:
        for target in reversed(started):
            target.stop()
    value = _ratio_line(sec, "router_default_vs_nginx_log", "router-default", "nginx-log")
    _ratio_line(sec, "router_default_vs_direct", "router-default", "direct")
    sec.lines.append("the model server itself: 'direct' CPU µs/req is the backend's own")
    sec.checks.append(Check("req/s vs nginx, aiohttp model server behind", value, 0.9, "x", True))
    return sec


def _spawn_model(ctx: Context, cmd: list[str], port: int) -> targets.Target:
    log = ctx.workdir / "model-server.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    target = targets.Target("model-server", port, proc, log)
    targets.wait_ready(target)
    return target


def workers_scale(ctx: Context) -> Section:
    """router --workers 2 vs nginx worker_processes 2 (both default access log), and 1 each."""
    from bench.scenarios import Check, Section

    title = "2 workers: router --workers 2 vs nginx worker_processes 2, access log on"
    one: dict[str, targets.Target] = {
        n: ctx.targets[n] for n in ("nginx-log", "router-default") if n in ctx.targets
    }
    if len(one) < 2:
        return Section(title, ["target"], lines=["skipped: needs nginx-log and router-default"])
    backend = _backend_port(ctx)
    started: list[targets.Target] = []
    with redis_server(ctx.workdir) as redis_port:
        try:
            started.append(
                targets.start_nginx_proxy(
                    ctx.workdir, backend, access_log=True, workers=2, name="nginx-log-2w"
                )
            )
            yaml = _WORKERS_YAML.replace("{redis_port}", str(redis_port))
            started.append(
                targets.start_router(
                    ctx.workdir, backend, name="router-default-2w", config=yaml, args=("-w", "2")
                )
            )
            four: dict[str, targets.Target] = {
                **one,
                "nginx-log-2w": started[0],
                "router-default-2w": started[1],
            }
            sec = _table(ctx, f"{title}, median of {ctx.settings.runs}", four)
        finally:
            for target in reversed(started):
                target.stop()
    value = _ratio_line(sec, "router_2w_vs_nginx_2w", "router-default-2w", "nginx-log-2w")
    _ratio_line(sec, "router_2w_vs_1w", "router-default-2w", "router-default")
    _ratio_line(sec, "nginx_2w_vs_1w", "nginx-log-2w", "nginx-log")
    sec.lines.append(
        "two cores shared by wrk (2 threads), the backend and the workers: the second "
        "worker competes with the load generator; router-default-2w keeps its state in Redis"
    )
    sec.checks.append(Check("req/s vs nginx, 2 workers each", value, 0.9, "x", True))
    return sec


def _backend_port(ctx: Context) -> int:
    from bench.scenarios import _backend_port as port_of

    return port_of(ctx)
