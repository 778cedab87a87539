"""What `make bench` measures: each scenario is one function `Context -> Section`.

Adding a scenario (mirror cost, rollback propagation, drift cost ...) means
writing one such function and appending it to `SCENARIOS`. A scenario may use
the shared targets in `ctx.targets` (started once, in the order given) or
start its own with bench.targets and stop them before returning.

Throughput alternates targets A B C A B C so that a slow drift of the machine
(another tenant, thermal limits) hits each target alike; the median of the
runs is reported. CPU µs per request is the CPU used by the target's process
tree during the measured run (warm-up excluded) divided by wrk's count.
"""

from __future__ import annotations

import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procstat, targets, wrk
from bench.targets import Target

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    duration: float = 10.0  # one measured wrk run, seconds
    warmup: float = 3.0  # wrk run before each measured one, not counted
    runs: int = 3  # measured runs per target; the median is reported
    threads: int = 2
    connections: int = 64
    latency_duration: float = 5.0  # the one-connection run
    memory_requests: int = 200_000
    memory_max_seconds: float = 90.0  # stop adding load after this even if short of the count


@dataclass
class Context:
    settings: Settings
    workdir: Path
    targets: dict[str, Target]  # "direct", "nginx", "nginx-plain", "router", in this order
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Check:
    """A foundation target, reported as information (it never fails the run)."""

    name: str
    value: float | None
    limit: float
    unit: str
    higher_is_better: bool = False

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit


@dataclass
class Section:
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # ratios and remarks under the table
    checks: list[Check] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # goes to the JSON file


Scenario = Callable[[Context], Section]


@dataclass(frozen=True, slots=True)
class Load:
    """One wrk shape: threads, connections, measured seconds, warm-up seconds before it."""

    threads: int
    connections: int
    duration: float
    warmup: float


@dataclass(frozen=True, slots=True)
class Run:
    result: wrk.WrkResult
    cpu_us: float


def measure(target: Target, load: Load) -> Run:
    """Warm up, then one measured wrk run with the target's CPU read around it."""
    if load.warmup > 0:
        wrk.run(
            target.url, threads=load.threads, connections=load.connections, duration=load.warmup
        )
    before = procstat.tree_cpu_seconds(target.pid)
    result = wrk.run(
        target.url, threads=load.threads, connections=load.connections, duration=load.duration
    )
    used = procstat.tree_cpu_seconds(target.pid) - before
    return Run(result, used * 1e6 / max(result.requests, 1))


def _median(runs: list[Run]) -> dict[str, float]:
    return {
        "rps": statistics.median(r.result.rps for r in runs),
        "p50_ms": statistics.median(r.result.p50_ms for r in runs),
        "p99_ms": statistics.median(r.result.p99_ms for r in runs),
        "cpu_us": statistics.median(r.cpu_us for r in runs),
        "errors": float(sum(r.result.errors for r in runs)),
        "requests": float(sum(r.result.requests for r in runs)),
    }


def alternate(ctx: Context, rounds: int, load: Load) -> dict[str, dict[str, float]]:
    """Measure every target once per round (A B C A B C ...); median per target."""
    runs: dict[str, list[Run]] = {name: [] for name in ctx.targets}
    for _ in range(rounds):
        for name, target in ctx.targets.items():
            runs[name].append(measure(target, load))
    return {name: _median(r) for name, r in runs.items()}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def throughput(ctx: Context) -> Section:
    s = ctx.settings
    med = alternate(ctx, s.runs, Load(s.threads, s.connections, s.duration, s.warmup))
    sec = Section(
        f"throughput: wrk -t{s.threads} -c{s.connections} -d{s.duration:g}s, "
        f"median of {s.runs} (A B C alternating)",
        ["target", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "errors"],
        data=med,
    )
    for name, m in med.items():
        sec.rows.append(
            [
                name,
                f"{m['rps']:.0f}",
                f"{m['p50_ms']:.3f}",
                f"{m['p99_ms']:.3f}",
                f"{m['cpu_us']:.1f}",
                f"{m['errors']:.0f}",
            ]
        )
    throughput_ratios(sec, med)
    return sec


def throughput_ratios(sec: Section, med: dict[str, dict[str, float]]) -> None:
    """Router vs nginx with the access log off on both, and on both (each one's default)."""
    rps = {name: m["rps"] for name, m in med.items()}
    cpu = {name: m["cpu_us"] for name, m in med.items()}
    ratios = {
        "router_vs_nginx": _ratio(rps.get("router"), rps.get("nginx")),
        "router_default_vs_nginx_log": _ratio(rps.get("router-default"), rps.get("nginx-log")),
        "router_default_vs_nginx": _ratio(rps.get("router-default"), rps.get("nginx")),
        "router_vs_nginx_plain": _ratio(rps.get("router"), rps.get("nginx-plain")),
        "router_vs_direct": _ratio(rps.get("router"), rps.get("direct")),
    }
    log_cost = {
        "router": _diff(cpu.get("router-default"), cpu.get("router")),
        "nginx": _diff(cpu.get("nginx-log"), cpu.get("nginx")),
    }
    sec.data["ratios"], sec.data["access_log_cpu_us"] = ratios, log_cost
    sec.lines += [
        f"access log off on both:  router/nginx req/s {_fmt(ratios['router_vs_nginx'], 'x')}",
        "access log on on both (each one's default): router-default/nginx-log req/s "
        f"{_fmt(ratios['router_default_vs_nginx_log'], 'x')}",
        f"router-default/nginx req/s: {_fmt(ratios['router_default_vs_nginx'], 'x')}   "
        f"router/nginx-plain req/s: {_fmt(ratios['router_vs_nginx_plain'], 'x')}   "
        f"router/direct req/s: {_fmt(ratios['router_vs_direct'], 'x')}",
        f"CPU per request of the access log: router {_fmt(log_cost['router'], ' µs', '+.1f')}, "
        f"nginx {_fmt(log_cost['nginx'], ' µs', '+.1f')}",
        "nginx: split_clients per request, like the router's split (the reference); "
        "nginx-plain: a fixed proxy_pass; -log / -default: the access log on, to a file",
    ]
    sec.checks += [
        Check("req/s vs nginx, access log off", ratios["router_vs_nginx"], 0.9, "x", True),
        Check(
            "req/s vs nginx, access log on (defaults)",
            ratios["router_default_vs_nginx_log"],
            0.9,
            "x",
            True,
        ),
        Check("CPU per request, default config", cpu.get("router-default"), 20.0, "µs"),
        Check("CPU per request of the access log", log_cost["router"], 2.0, "µs"),
    ]


def _diff(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def added_latency(ctx: Context) -> Section:
    s = ctx.settings
    med = alternate(ctx, s.runs, Load(1, 1, s.latency_duration, min(1.0, s.warmup)))
    sec = Section(
        f"added latency: wrk -t1 -c1 -d{s.latency_duration:g}s, median of {s.runs}",
        ["target", "p50 ms", "p99 ms", "added p50 ms"],
        data=med,
    )
    direct = med.get("direct", {}).get("p50_ms")
    added: dict[str, float | None] = {}
    for name, m in med.items():
        added[name] = m["p50_ms"] - direct if direct is not None else None
        sec.rows.append(
            [name, f"{m['p50_ms']:.3f}", f"{m['p99_ms']:.3f}", _fmt(added[name], "", "+.3f")]
        )
    sec.data["added_p50_ms"] = added
    sec.checks.append(Check("added p50 at c=1", added.get("router"), 0.06, "ms"))
    return sec


def _load_until(target: Target, s: Settings, count: int) -> int:
    """Keep wrk running in short chunks until `count` requests or the time cap."""
    done, deadline = 0, time.monotonic() + s.memory_max_seconds
    while done < count and time.monotonic() < deadline:
        chunk = wrk.run(target.url, threads=s.threads, connections=s.connections, duration=5)
        done += chunk.requests
    return done


def memory_growth(ctx: Context) -> Section:
    s = ctx.settings
    sec = Section(
        "router memory: RSS before / after load (after warm-up)",
        ["target", "requests", "RSS before MB", "RSS after MB", "growth MB"],
    )
    router = ctx.targets.get("router")
    if router is None:
        sec.lines.append("skipped: no router target")
        sec.checks.append(Check("RSS growth", None, 10.0, "MB"))
        return sec
    wrk.run(router.url, threads=s.threads, connections=s.connections, duration=s.warmup)
    before = procstat.tree_rss_bytes(router.pid)
    done = _load_until(router, s, s.memory_requests)
    after = procstat.tree_rss_bytes(router.pid)
    growth = (after - before) / MB
    sec.rows.append(
        ["router", str(done), f"{before / MB:.1f}", f"{after / MB:.1f}", f"{growth:+.2f}"]
    )
    if done < s.memory_requests:
        sec.lines.append(f"note: only {done} of {s.memory_requests} requests within the time cap")
    sec.data = {"requests": done, "rss_before": before, "rss_after": after, "growth_mb": growth}
    sec.checks.append(Check("RSS growth", growth, 10.0, "MB"))
    return sec


def _fmt(value: float | None, unit: str, spec: str = ".2f") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


# -- mirror cost: the same router with every request mirrored ----------------------

_SHADOW_YAML = """listen: 127.0.0.1:{{port}}
admin: {{{{listen: 127.0.0.1:{{admin_port}}}}}}
logging: {{{{access_sample: 0}}}}
backends:
  b: {{{{url: http://127.0.0.1:{{backend_port}}}}}}
  s: {{{{url: http://127.0.0.1:{shadow_port}, timeout: 5s}}}}
routes:
  - name: all
    match: {{{{path_prefix: /}}}}
    strategy: {{{{shadow: {{{{primary: b, shadows: [s], percent: 100}}}}}}}}
"""


def _start_sleeper(workdir: Path, latency_ms: int) -> Target:
    """An example model server answering after `latency_ms` (a slow shadow)."""
    port = targets.free_port()
    cmd = [sys.executable, "-m", "examples.model_server", "--port", str(port)]
    log = workdir / "sleeper.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*cmd, "--latency-ms", str(latency_ms)], stdout=out, stderr=subprocess.STDOUT
        )
    target = Target("sleeper", port, proc, log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # it answers slowly by design: wait for the port only
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return target
        except OSError:
            time.sleep(0.05)
    target.stop()
    raise targets.StartError("the sleeping shadow did not start")


def _mirror_router(ctx: Context, backend_port: int, shadow_port: int, name: str) -> Target:
    yaml = _SHADOW_YAML.format(shadow_port=shadow_port)
    return targets.start_router(ctx.workdir, backend_port, name=name, config=yaml)


def mirror_cost(ctx: Context) -> Section:
    """Router CPU and req/s with 100 % mirroring vs none; p99 with a 2 s shadow."""
    s = ctx.settings
    sec = Section(
        f"mirror cost: 100 % mirrored vs none, wrk -t{s.threads} -c{s.connections}, "
        f"median of {s.runs}",
        ["target", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "errors"],
    )
    plain = ctx.targets.get("router")
    if plain is None:
        sec.lines.append("skipped: no router target")
        return sec
    backend_port = _backend_port(ctx)
    started: list[Target] = []
    try:
        started.append(_mirror_router(ctx, backend_port, backend_port, "router-mirror"))
        started.append(_start_sleeper(ctx.workdir, 2000))
        started.append(_mirror_router(ctx, backend_port, started[1].port, "router-slow-shadow"))
        _mirror_runs(ctx, sec, {"router": plain, "router-mirror": started[0]})
        _slow_shadow_runs(ctx, sec, plain, started[2])
        fixed_rate_p99(ctx, sec, {"router": plain, "router-slow-shadow": started[2]})
    finally:
        for target in reversed(started):
            target.stop()
    return sec


def _backend_port(ctx: Context) -> int:
    """The backend behind the shared router, read back from the router's config."""
    text = (ctx.workdir / "router.yaml").read_text()
    found = re.search(r"b: \{url: http://127\.0\.0\.1:(\d+)", text)
    return int(found.group(1)) if found else 0


def _row(name: str, m: dict[str, float]) -> list[str]:
    return [
        name,
        f"{m['rps']:.0f}",
        f"{m['p50_ms']:.3f}",
        f"{m['p99_ms']:.3f}",
        f"{m['cpu_us']:.1f}",
        f"{m['errors']:.0f}",
    ]


def _mirror_runs(ctx: Context, sec: Section, pair: dict[str, Target]) -> None:
    s = ctx.settings
    sub = Context(s, ctx.workdir, pair, ctx.notes)
    med = alternate(sub, s.runs, Load(s.threads, s.connections, s.duration, s.warmup))
    sec.rows += [_row(name, m) for name, m in med.items()]
    kept = _ratio(med["router-mirror"]["rps"], med["router"]["rps"])
    extra_cpu = med["router-mirror"]["cpu_us"] - med["router"]["cpu_us"]
    sec.data["mirror"] = {**med, "rps_kept": kept, "extra_cpu_us": extra_cpu}
    sec.lines.append(
        f"req/s kept with 100 % mirroring: {_fmt(kept, 'x')}   "
        f"extra CPU per request: {extra_cpu:+.1f} µs"
    )
    sec.checks.append(Check("req/s kept with mirroring", kept, 0.65, "x", higher_is_better=True))


def _slow_shadow_runs(ctx: Context, sec: Section, plain: Target, slow: Target) -> None:
    s = ctx.settings
    sub = Context(s, ctx.workdir, {"router": plain, "router-slow-shadow": slow}, ctx.notes)
    load = Load(1, 8, s.latency_duration, min(1.0, s.warmup))
    med = alternate(sub, s.runs, load)
    sec.rows += [_row(f"{name} (c=8)", m) for name, m in med.items()]
    added = med["router-slow-shadow"]["p99_ms"] - med["router"]["p99_ms"]
    sec.data["slow_shadow"] = {**med, "added_p99_ms": added}
    sec.lines.append(f"primary p99 with a 2 s shadow vs none (c=8): {added:+.3f} ms")


FIXED_RATE = 2000.0  # requests a second: well below saturation on two cores


def fixed_rate_p99(ctx: Context, sec: Section, pair: dict[str, Target]) -> None:
    """p99 at the same fixed load (open loop), A B alternating, median of the runs."""
    from bench import openloop

    s = ctx.settings
    p99s: dict[str, list[float]] = {name: [] for name in pair}
    for _ in range(s.runs):
        for name, target in pair.items():
            result = openloop.run(target.port, rate=FIXED_RATE, seconds=s.latency_duration)
            p99s[name].append(result.p99_ms)
    (base, base_runs), (other, other_runs) = p99s.items()
    a, b = statistics.median(base_runs), statistics.median(other_runs)
    sec.data.setdefault("fixed_rate", {})[other] = {"p99_ms": b, "baseline_p99_ms": a}
    sec.lines.append(
        f"p99 at a fixed {FIXED_RATE:g} req/s (open loop): {other} {b:.3f} ms vs {base} "
        f"{a:.3f} ms ({b / a:.2f}x)"
    )
    sec.checks.append(Check(f"p99 ratio, {other} at fixed load", b / a, 1.05, "x"))


SCENARIOS: list[Scenario] = [throughput, added_latency, memory_growth, mirror_cost]

from bench.replicas import replica_propagation  # noqa: E402 (it uses the types defined above)

SCENARIOS.append(replica_propagation)

from bench.drift_cost import drift_cost  # noqa: E402 (it uses the types defined above)

SCENARIOS.append(drift_cost)

from bench.shadow_soak import dead_shadow_soak  # noqa: E402 (it uses the types defined above)

SCENARIOS.append(dead_shadow_soak)

from bench.inproc import in_process  # noqa: E402 (it uses the types defined above)
from bench.protocol_cost import protocol_cost  # noqa: E402 (it uses the types defined above)
from bench.stream_cost import stream_cost  # noqa: E402 (it uses the types defined above)

SCENARIOS.append(protocol_cost)
SCENARIOS.append(stream_cost)

SCENARIOS.insert(1, in_process)

from bench.defaults import model_server_stand_in, workers_scale  # noqa: E402 (same)

SCENARIOS.insert(2, model_server_stand_in)
SCENARIOS.insert(3, workers_scale)

from bench.scale import scale  # noqa: E402 (same)

# Run only when named (`--only scale`): minutes more than the rest of the run.
OPTIONAL: list[Scenario] = [scale]
