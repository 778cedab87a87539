"""Run Debian's `wrk` and read its text report.

wrk prints one report per run; with `--latency` it includes a "Latency
Distribution" block (50/75/90/99 %). We keep requests, duration, req/s, p50,
p99 and the error counts (non-2xx answers, socket errors), because a target
that answers fast with errors must not look like a fast target.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

POST_LUA = Path(__file__).with_name("post.lua")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_PCT = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKERR = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class WrkError(RuntimeError):
    """wrk failed to run or printed something we cannot read."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int = 0
    socket_errors: int = 0

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors


def parse(text: str) -> WrkResult:
    """Read one wrk report (run with --latency)."""
    pct = {m.group(1): float(m.group(2)) * _UNIT_MS[m.group(3)] for m in _PCT.finditer(text)}
    total, rps = _TOTAL.search(text), _RPS.search(text)
    if total is None or rps is None or "50" not in pct or "99" not in pct:
        raise WrkError(f"unreadable wrk output:\n{text}")
    non2xx = _NON2XX.search(text)
    sock = _SOCKERR.search(text)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * _UNIT_MS[total.group(3)] / 1000.0,
        rps=float(rps.group(1)),
        p50_ms=pct["50"],
        p99_ms=pct["99"],
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
    )


def run(url: str, *, threads: int = 2, connections: int = 64, duration: float = 10.0) -> WrkResult:
    """One wrk run with post.lua against `url`; blocks for about `duration` seconds."""
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "-s",
        str(POST_LUA),
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, check=False)
    if proc.returncode != 0:
        raise WrkError(f"wrk exited {proc.returncode}: {proc.stderr.strip() or proc.stdout}")
    return parse(proc.stdout)
