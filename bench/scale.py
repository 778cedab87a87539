"""`python -m bench.run --only scale`: the cost per request as the work grows.

Each table puts the router beside nginx doing the same work, A B A B
alternating, one load shape per table, so the ratios come from one run:

- routes: 1 route vs 10,000 (router: path prefixes; nginx: as many `location`
  blocks), traffic on one of them; plus, for 10,000 routes, the router's start
  (spawn to the first 200), `routerctl validate`, and a one-weight reload while a
  fixed 1,000 req/s runs: seconds until the new weight serves, and the slowest
  request meanwhile;
- backends: a split over 2 backends vs 100 (the same server behind every name:
  the work is the router's choice and its pools; nginx: `split_clients` over as
  many upstreams);
- connections: wrk with 32 connections vs 2,000; then 2,000 idle client
  connections held open beside a 32-connection load: the router's memory per
  idle connection, and its CPU while they sit there.

Not in the default `make bench` run: it takes a few minutes more than the rest.
"""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from bench import openloop, procstat, targets

if TYPE_CHECKING:  # bench.scenarios registers this scenario: import it lazily, no cycle
    from bench.scenarios import Context, Section

ROUTES = 10_000
BACKENDS = 100
CONNECTIONS = (32, 2_000)
RELOAD_RATE = 1_000.0  # req/s during the reload
HEADER = ["case", "target", "req/s", "p99 ms", "CPU µs/req", "errors"]

_ROUTER_HEAD = """listen: 127.0.0.1:{port}
admin: {{listen: 127.0.0.1:{admin_port}}}
logging: {{access_sample: 0}}
limits: {{idle_timeout: 120s}}"""
_NGINX_CONF = """daemon off;
worker_processes 1;
pid {dir}/{name}.pid;
error_log {dir}/{name}.error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  client_body_temp_path {dir}/{name}-body;
  proxy_temp_path {dir}/{name}-proxy;
  fastcgi_temp_path {dir}/{name}-fastcgi;
  uwsgi_temp_path {dir}/{name}-uwsgi;
  scgi_temp_path {dir}/{name}-scgi;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
{body}
}}
"""


# -- configs -----------------------------------------------------------------
def router_config(routes: int, backends: int, backend_port: int, flip_port: int = 0) -> str:
    """`routes` routes (the benched one is /predict), split over `backends` names;
    with `flip_port`, a route /flip on a backend at that port (the reload moves it)."""
    names = [f"b{i}" for i in range(backends)]
    lines = [_ROUTER_HEAD, "backends:"]
    lines += [f"  {n}: {{{{url: http://127.0.0.1:{backend_port}}}}}" for n in names]
    if flip_port:
        lines.append(f"  gone: {{{{url: http://127.0.0.1:{flip_port}}}}}")
    each = [100 // backends] * backends  # weights sum to 100
    each[0] += 100 - sum(each)
    weights = ", ".join(f"{n}: {w}" for n, w in zip(names, each, strict=True))
    lines.append("routes:")
    lines.append(_route("predict", "/predict", f"{{{{{weights}}}}}"))
    lines += [_route(f"r{i}", f"/m{i}/v", "{{b0: 100}}") for i in range(routes - 1)]
    if flip_port:
        lines.append(_route("flip", "/flip", "{{gone: 100}}"))
    return "\n".join(lines) + "\n"


def _route(name: str, prefix: str, weights: str) -> str:
    return (
        f"  - {{{{name: {name}, match: {{{{path_prefix: {prefix}}}}}, "
        f"strategy: {{{{split: {{{{weights: {weights}}}}}}}}}}}}}"
    )


def nginx_body(port: int, routes: int, backends: int, backend_port: int) -> str:
    """nginx doing the same: `split_clients` over `backends` upstreams, `routes` locations;
    each upstream keeps up to 1,024 idle connections, as the router's pools do (with the
    128 of the main reference, 2,000 client connections make nginx reconnect per request)."""
    ups = [f"u{i}" for i in range(backends)]
    share = f"{100 / backends:.4g}%"
    lines = [f'  split_clients "$request_id" $pool {{ {" ".join(f"{share} {u};" for u in ups)} }}']
    lines += [f"  upstream {u} {{ server 127.0.0.1:{backend_port}; keepalive 1024; }}" for u in ups]
    lines.append(f"  server {{\n    listen 127.0.0.1:{port} backlog=4096;")
    lines.append("    location /predict { proxy_pass http://$pool; }")
    lines += [f"    location /m{i}/v {{ proxy_pass http://u0; }}" for i in range(routes - 1)]
    lines.append("  }")
    return "\n".join(lines)


# -- targets -----------------------------------------------------------------
def start_nginx(
    workdir: Path, name: str, routes: int, backends: int, backend_port: int
) -> targets.Target:
    port = targets.free_port()
    body = nginx_body(port, routes, backends, backend_port)
    conf = workdir / f"{name}.conf"
    conf.write_text(_NGINX_CONF.format(dir=workdir, name=name, body=body))
    err = workdir / f"{name}.error.log"
    cmd = ["nginx", "-p", str(workdir), "-e", str(err), "-c", str(conf)]
    return targets._spawn(name, port, cmd, workdir)


def start_router(
    workdir: Path, name: str, routes: int, backends: int, backend_port: int, flip_port: int = 0
) -> tuple[targets.Target, float]:
    """The router on its generated config, and the seconds from spawn to its first 200."""
    started = time.monotonic()
    text = router_config(routes, backends, backend_port, flip_port)
    target = targets.start_router(workdir, backend_port, name=name, config=text)
    return target, time.monotonic() - started


@contextmanager
def running(*started: targets.Target) -> Iterator[None]:
    try:
        yield
    finally:
        for target in reversed(started):
            target.stop()


# -- the scenario --------------------------------------------------------------
def scale(ctx: Context) -> Section:
    from bench.scenarios import Section, _backend_port

    s = ctx.settings
    sec = Section(
        f"scale: routes, backends, connections; router vs nginx, wrk -t{s.threads}, "
        f"median of {s.runs}",
        HEADER,
    )
    if not targets.have("nginx"):
        sec.lines.append("skipped: nginx not installed")
        return sec
    port = _backend_port(ctx)
    _routes_table(ctx, sec, port)
    _backends_table(ctx, sec, port)
    _connections_table(ctx, sec, port)
    return sec


def _pairs(
    ctx: Context, sec: Section, case: str, pair: dict[str, targets.Target], conns: int
) -> dict[str, dict[str, float]]:
    from bench.scenarios import Context, Load, alternate

    s = ctx.settings
    sub = Context(s, ctx.workdir, pair, ctx.notes)
    med = alternate(sub, s.runs, Load(s.threads, conns, s.duration, s.warmup))
    for name, m in med.items():
        sec.rows.append(
            [
                case,
                name,
                f"{m['rps']:.0f}",
                f"{m['p99_ms']:.3f}",
                f"{m['cpu_us']:.1f}",
                f"{m['errors']:.0f}",
            ]
        )
    ratio = med["router"]["rps"] / med["nginx"]["rps"] if med["nginx"]["rps"] else 0.0
    sec.data.setdefault("cases", {})[case] = {**med, "router_vs_nginx": ratio}
    return med


def _ratio_of_ratios(sec: Section, what: str, small: str, large: str) -> None:
    cases = sec.data["cases"]
    a, b = cases[small]["router_vs_nginx"], cases[large]["router_vs_nginx"]
    cpu = cases[large]["router"]["cpu_us"] / max(cases[small]["router"]["cpu_us"], 1e-9)
    sec.lines.append(
        f"{what}: router/nginx req/s {a:.2f}x at {small}, {b:.2f}x at {large} "
        f"(kept {b / a if a else 0:.2f} of it); router CPU per request {cpu:.2f}x"
    )


def _routes_table(ctx: Context, sec: Section, port: int) -> None:
    for routes in (1, ROUTES):
        router, ready = start_router(ctx.workdir, f"router-{routes}r", routes, 1, port)
        with running(router):
            nginx = start_nginx(ctx.workdir, f"nginx-{routes}r", routes, 1, port)
            with running(nginx):
                _pairs(
                    ctx,
                    sec,
                    _n(routes, "route"),
                    {"router": router, "nginx": nginx},
                    ctx.settings.connections,
                )
        sec.data.setdefault("start_s", {})[routes] = ready
    _ratio_of_ratios(sec, "routes", _n(1, "route"), _n(ROUTES, "route"))
    sec.lines.append(
        f"router start, {ROUTES:,} routes: {sec.data['start_s'][ROUTES]:.2f} s to the first 200"
    )
    _validate_line(ctx, sec)
    _reload_line(ctx, sec, port)


def _validate_line(ctx: Context, sec: Section) -> None:
    path = ctx.workdir / f"router-{ROUTES}r.yaml"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "router.ops.cli", "validate", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    sec.data["validate"] = {"wall_s": wall, "cpu_s": cpu, "ok": done.returncode == 0}
    sec.lines.append(
        f"routerctl validate, {ROUTES:,} routes: {wall:.2f} s ({cpu:.2f} s CPU), "
        f"exit {done.returncode}"
    )


def _reload_line(ctx: Context, sec: Section, port: int) -> None:
    """One weight edited in a 10,000-route file while 1,000 req/s run on another route;
    the same load without an edit first, for the slowest request it sees anyway."""
    router, _ = start_router(
        ctx.workdir, "router-reload", ROUTES, 1, port, flip_port=_closed_port()
    )
    with running(router):
        quiet, _ = _load_while(router, None)
        path = ctx.workdir / "router-reload.yaml"
        edit = path.read_text().replace("{gone: 100}", "{b0: 100}")
        loaded, took = _load_while(router, lambda: path.write_text(edit))
    sec.data["reload"] = {"applied_s": took, "during": asdict(loaded), "without": asdict(quiet)}
    applied = f"applied after {took:.2f} s" if took is not None else "NOT applied in 20 s"
    sec.lines.append(
        f"reload, {ROUTES:,} routes, one weight, under {RELOAD_RATE:,.0f} req/s: {applied}; "
        f"slowest request {loaded.max_ms:.1f} ms, p99 {loaded.p99_ms:.2f} ms, "
        f"{loaded.failed} failed (same load, no reload: slowest {quiet.max_ms:.1f} ms, "
        f"p99 {quiet.p99_ms:.2f} ms)"
    )


def _load_while(
    router: targets.Target, edit: Callable[[], object] | None
) -> tuple[openloop.OpenLoopResult, float | None]:
    """6 s of fixed-rate load; 2 s in, `edit`, and the seconds until /flip answers 200."""
    result: list[openloop.OpenLoopResult] = []
    worker = threading.Thread(
        target=lambda: result.append(
            openloop.run(router.port, rate=RELOAD_RATE, seconds=6.0, conns=16)
        )
    )
    worker.start()
    time.sleep(2.0)
    took = None
    if edit is not None:
        edited = time.monotonic()
        edit()
        applied = _wait_flip(router.port, edited + 20)
        took = applied - edited if applied else None
    worker.join()
    return result[0], took


def _n(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def _closed_port() -> int:
    return targets.free_port()  # nothing listens there: the route answers 502 until the reload


def _wait_flip(port: int, deadline: float) -> float | None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /flip HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return time.monotonic()
        except OSError:
            pass
        time.sleep(0.01)
    return None


def _backends_table(ctx: Context, sec: Section, port: int) -> None:
    for backends in (2, BACKENDS):
        router, _ = start_router(ctx.workdir, f"router-{backends}b", 1, backends, port)
        with running(router):
            nginx = start_nginx(ctx.workdir, f"nginx-{backends}b", 1, backends, port)
            with running(nginx):
                _pairs(
                    ctx,
                    sec,
                    f"{backends} backends",
                    {"router": router, "nginx": nginx},
                    ctx.settings.connections,
                )
    _ratio_of_ratios(sec, "backends", "2 backends", f"{BACKENDS} backends")


def _connections_table(ctx: Context, sec: Section, port: int) -> None:
    router, _ = start_router(ctx.workdir, "router-conns", 1, 1, port)
    with running(router):
        nginx = start_nginx(ctx.workdir, "nginx-conns", 1, 1, port)
        with running(nginx):
            pair = {"router": router, "nginx": nginx}
            for conns in CONNECTIONS:
                _pairs(ctx, sec, f"{conns:,} connections", pair, conns)
            _ratio_of_ratios(
                sec,
                "connections",
                f"{CONNECTIONS[0]:,} connections",
                f"{CONNECTIONS[1]:,} connections",
            )
            _idle_lines(ctx, sec, pair)


def _idle_lines(ctx: Context, sec: Section, pair: dict[str, targets.Target]) -> None:
    """2,000 idle keep-alive client connections: memory per connection, CPU while idle."""
    idle = CONNECTIONS[1]
    for name, target in pair.items():
        rss0 = procstat.tree_rss_bytes(target.pid)
        socks = [socket.create_connection(("127.0.0.1", target.port)) for _ in range(idle)]
        try:
            time.sleep(1.0)
            rss1 = procstat.tree_rss_bytes(target.pid)
            cpu0 = procstat.tree_cpu_seconds(target.pid)
            time.sleep(5.0)
            cpu = procstat.tree_cpu_seconds(target.pid) - cpu0
        finally:
            for sock in socks:
                sock.close()
        per = (rss1 - rss0) / idle
        sec.data.setdefault("idle", {})[name] = {"bytes_per_conn": per, "cpu_s_per_5s": cpu}
        sec.lines.append(
            f"{name}: {idle:,} idle client connections: {per / 1024:.1f} KiB each, "
            f"{cpu * 1000:.0f} ms CPU in 5 s while they sit"
        )
