"""`make bench`: the router against direct-to-backend and nginx, in one run.

Follows the rules of BENCH.md: start one fast backend, the reference nginx reverse
proxy (1 worker, upstream keep-alive, `split_clients` deciding a split per request
as the router does, access log off), the same nginx with its default access log to
a file (`nginx-log`), nginx without the split (`nginx-plain`, for information), the
router with the access log off (`router`: 1 process, one split route 100 % to the
backend) and the router as a user runs it (`router-default`: no logging section,
so the access log is on, on stderr, which goes to a file in the run's directory),
each on a free loopback port; then run every
scenario in `bench.scenarios.SCENARIOS` and print a table per scenario, the
foundation targets as PASS/FAIL (information only: the exit code is 0 unless a
step crashed) and write everything as JSON (default run/bench-results.json).

`--quick` is a smoke run of a few minutes; the default run takes about twenty
minutes on two shared cores. Missing nginx or wrk: installed with apt only under `--install`
(or BENCH_INSTALL=1) when running as root, otherwise that part is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import targets
from bench.scenarios import OPTIONAL, SCENARIOS, Check, Context, Section, Settings

QUICK = Settings(
    duration=2, warmup=1, runs=1, latency_duration=2, memory_requests=20_000, memory_max_seconds=10
)
ALL_TARGETS = ("direct", "nginx", "nginx-log", "nginx-plain", "router", "router-default")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short smoke run (a few minutes)")
    p.add_argument("--duration", type=float, help="seconds per measured wrk run (default 10)")
    p.add_argument("--runs", type=int, help="measured runs per target (default 3)")
    p.add_argument(
        "--targets",
        default=",".join(ALL_TARGETS),
        help="comma-separated subset of " + ",".join(ALL_TARGETS),
    )
    p.add_argument(
        "--backend",
        choices=("auto", "nginx", "python"),
        default="auto",
        help="what answers behind the proxies (auto: nginx when installed)",
    )
    p.add_argument("--out", default="run/bench-results.json", help="JSON results file")
    p.add_argument(
        "--only",
        default="",
        help="comma-separated scenario names to run (default: all: "
        + ", ".join(s.__name__ for s in SCENARIOS)
        + "; only when named: "
        + ", ".join(s.__name__ for s in OPTIONAL)
        + ")",
    )
    p.add_argument(
        "--install",
        action="store_true",
        help="apt-get install nginx-light wrk if missing (root only)",
    )
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    base = QUICK if args.quick else Settings()
    changes: dict[str, Any] = {}
    if args.duration is not None:
        changes["duration"] = args.duration
    if args.runs is not None:
        changes["runs"] = max(1, args.runs)
    return Settings(**{**asdict(base), **changes})


def ensure_tools(install: bool) -> list[str]:
    """Install missing nginx/wrk when allowed; return notes on what is still missing."""
    missing = [tool for tool in ("wrk", "nginx") if not targets.have(tool)]
    allowed = install or os.environ.get("BENCH_INSTALL") == "1"
    if missing and allowed and os.geteuid() == 0:
        print(f"installing {', '.join(missing)} with apt-get ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "nginx-light", "wrk"], check=False)
        missing = [tool for tool in missing if not targets.have(tool)]
    hint = " (run as root with --install or BENCH_INSTALL=1 to install it)"
    return [f"{tool} not found: skipping what needs it{hint}" for tool in missing]


def start_targets(ctx: Context, wanted: list[str], backend_kind: str) -> targets.Target:
    """Start the backend and the wanted targets; returns the backend (stop it last)."""
    backend = targets.start_backend(ctx.workdir, backend_kind)
    ctx.notes.append(f"backend: {backend.extra['kind']}")
    try:
        for name in wanted:
            ctx.targets[name] = _start_one(ctx, name, backend)
    except BaseException:
        stop_all(ctx, backend)
        raise
    return backend


def _start_one(ctx: Context, name: str, backend: targets.Target) -> targets.Target:
    if name == "direct":
        return targets.Target("direct", backend.port, backend.proc, backend.log)
    if name.startswith("nginx"):
        return targets.start_nginx_proxy(
            ctx.workdir,
            backend.port,
            split=name != "nginx-plain",
            access_log=name == "nginx-log",
            name=name,
        )
    if name == "router-default":
        return targets.start_router(
            ctx.workdir, backend.port, name=name, config=targets.DEFAULT_YAML
        )
    return targets.start_router(ctx.workdir, backend.port)


def stop_all(ctx: Context, backend: targets.Target) -> None:
    for name, target in reversed(ctx.targets.items()):
        if name != "direct":
            target.stop()
    backend.stop()


def print_section(sec: Section) -> None:
    widths = [max(len(row[i]) for row in [sec.header, *sec.rows]) for i in range(len(sec.header))]
    print(f"\n== {sec.title}")
    for row in [sec.header, *sec.rows]:
        print("  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
    for line in sec.lines:
        print("  " + line)


def check_line(check: Check) -> str:
    verdict = {True: "PASS", False: "FAIL", None: "n/a "}[check.passed]
    op = "≥" if check.higher_is_better else "≤"
    value = "n/a" if check.value is None else f"{check.value:.3g} {check.unit}"
    return f"  [{verdict}] {check.name}: {value} (target {op} {check.limit:g} {check.unit})"


def run_scenarios(ctx: Context, only: str = "") -> list[Section]:
    wanted = {name for name in only.split(",") if name}
    sections = []
    for scenario in [*SCENARIOS, *OPTIONAL]:
        if (wanted or scenario in OPTIONAL) and scenario.__name__ not in wanted:
            continue
        started = time.monotonic()
        sec = scenario(ctx)
        sec.data["seconds"] = round(time.monotonic() - started, 1)
        print_section(sec)
        sections.append(sec)
    return sections


def write_json(path: Path, ctx: Context, sections: list[Section]) -> None:
    checks = [{**asdict(c), "passed": c.passed} for sec in sections for c in sec.checks]
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "settings": asdict(ctx.settings),
        "notes": ctx.notes,
        "sections": {sec.title.split(":")[0]: sec.data for sec in sections},
        "checks": checks,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    notes = ensure_tools(args.install)
    for note in notes:
        print(note)
    if not targets.have("wrk"):
        return 0  # nothing can be measured without a load generator
    wanted = [t for t in args.targets.split(",") if t in ALL_TARGETS]
    if not targets.have("nginx"):
        wanted = [t for t in wanted if not t.startswith("nginx")]
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        ctx = Context(settings_from(args), Path(tmp), {}, notes)
        try:
            backend = start_targets(ctx, wanted, args.backend)
        except targets.StartError as exc:
            print(f"bench: could not start a target: {exc}", file=sys.stderr)
            return 1
        try:
            print(
                f"targets: {', '.join(f'{n} :{t.port}' for n, t in ctx.targets.items())}; "
                f"{ctx.notes[-1]}",
                flush=True,
            )
            sections = run_scenarios(ctx, args.only)
        finally:
            stop_all(ctx, backend)
    print("\nfoundation targets (information only):")
    for check in (c for sec in sections for c in sec.checks):
        print(check_line(check))
    write_json(Path(args.out), ctx, sections)
    print(f"\nresults written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
