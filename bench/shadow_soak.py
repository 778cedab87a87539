"""A shadow that is down, under load, for a while: memory stays flat, clients unharmed.

The router mirrors 100 % of the traffic to a port where nothing listens (every
copy fails to connect) while wrk keeps the primary busy in 10 s chunks. The
router's resident memory is read after each chunk: the mirror queue, its
in-flight copies and its counters are all bounded, so it must stay flat however
long the shadow stays dead. The primary's p99 is compared with the plain
router's at the same load (c=8, not saturating), and the copies that could not
be mirrored are read back from the admin API (counted, never silent).

The soak lasts `BENCH_SOAK_SECONDS` (default: six measured runs; 600 for the
ten-minute soak the shadow issue names).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from typing import Any

from bench import procstat, targets, wrk
from bench.scenarios import MB, Context, Section, _backend_port, _mirror_router, fixed_rate_p99

CHUNK_SECONDS = 10.0


def _soak_seconds(ctx: Context) -> float:
    env = os.environ.get("BENCH_SOAK_SECONDS")
    return float(env) if env else max(12.0, 6 * ctx.settings.duration)


def _shadow_figures(admin_port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{admin_port}/v1/routes/all/shadow"
    token = os.environ.get("ROUTER_ADMIN_TOKEN", "bench-token")  # what start_router gives
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        figures: dict[str, Any] = json.loads(resp.read())
        return figures


def _p99(target: targets.Target, seconds: float) -> float:
    return wrk.run(target.url, threads=1, connections=8, duration=seconds).p99_ms


def dead_shadow_soak(ctx: Context) -> Section:
    soak = _soak_seconds(ctx)
    sec = Section(
        f"dead shadow soak: 100 % mirrored to a port nobody listens on, {soak:g} s of load",
        ["elapsed s", "requests", "RSS MB", "growth MB"],
    )
    plain = ctx.targets.get("router")
    if plain is None:
        sec.lines.append("skipped: no router target")
        return sec
    dead = _mirror_router(ctx, _backend_port(ctx), targets.free_port(), "router-dead-shadow")
    try:
        _soak(ctx, sec, dead, soak)
        plain_p99, dead_p99 = _p99(plain, 5), _p99(dead, 5)
        figures = _shadow_figures(int(dead.extra["admin_port"]))
        fixed_rate_p99(ctx, sec, {"router": plain, "router-dead-shadow": dead})
    finally:
        dead.stop()
    ratio = dead_p99 / plain_p99 if plain_p99 else None
    sec.lines.append(
        f"primary p99 at c=8: {dead_p99:.3f} ms with the dead shadow vs {plain_p99:.3f} ms "
        f"without ({ratio:.2f}x)"
        if ratio
        else "primary p99: n/a"
    )
    pair = (figures.get("shadows") or {}).get("s", {})
    sec.lines.append(
        f"copies offered {figures.get('offered', 0)}, dropped (queue full) "
        f"{figures.get('dropped', 0)}, no answer {pair.get('no_answer', 0)}"
    )
    sec.data.update(p99_plain_ms=plain_p99, p99_dead_ms=dead_p99, figures=figures)
    return sec


def _soak(ctx: Context, sec: Section, target: targets.Target, soak: float) -> None:
    s = ctx.settings
    wrk.run(target.url, threads=s.threads, connections=s.connections, duration=s.warmup)
    start_rss, started, done = procstat.tree_rss_bytes(target.pid), time.monotonic(), 0
    samples: list[tuple[float, int, float]] = []
    while time.monotonic() - started < soak:
        chunk = min(CHUNK_SECONDS, soak - (time.monotonic() - started))
        done += wrk.run(
            target.url, threads=s.threads, connections=s.connections, duration=max(1, chunk)
        ).requests
        rss = procstat.tree_rss_bytes(target.pid)
        samples.append((time.monotonic() - started, done, (rss - start_rss) / MB))
        sec.rows.append(
            [f"{samples[-1][0]:.0f}", str(done), f"{rss / MB:.1f}", f"{samples[-1][2]:+.2f}"]
        )
    sec.data["samples"] = samples
    worst = max((g for *_, g in samples), default=0.0)
    sec.lines.append(
        f"largest RSS growth over the soak: {worst:+.2f} MB (start {start_rss / MB:.1f})"
    )
