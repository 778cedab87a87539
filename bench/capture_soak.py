"""Capture under load: records = requests, the CPU it adds, a stalled CloudEvents sink.

    python -m bench.capture_soak [--seconds 60] [--rate 1000]

One nginx backend; one router each with capture off, capture at 100 % to a
file sink, and capture at 100 % to an HTTP sink that accepts every POST and
never answers (a stalled receiver). Each is driven by wrk at about `--rate`
requests a second (`-c10` with a per-request delay in the Lua script) for
`--seconds`. Printed per router: requests (wrk), errors, router CPU µs per
request (utime + stime from /proc), p50/p99, RSS before and after, and what
capture counted: records written, dropped by reason, the lines in the file.
Loopback only, bounded in time; it stops by itself.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import targets, wrk

TICKS = os.sysconf("SC_CLK_TCK")
CONNECTIONS = 10


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    found = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return int(found.group(1)) / 1024 if found else 0.0


def stalled_receiver() -> tuple[int, threading.Event]:
    """A listener that accepts and reads, and never answers (until `stop` is set)."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.setblocking(False)
            held.append(conn)  # read nothing more, answer nothing
        for conn in held:
            conn.close()
        server.close()

    threading.Thread(target=serve, name="stalled-receiver", daemon=True).start()
    return server.getsockname()[1], stop


def rate_lua(workdir: Path, rate: int) -> Path:
    delay_ms = max(1, round(1000 * CONNECTIONS / rate) - 1)  # ~1 ms goes to the exchange
    text = wrk.POST_LUA.read_text() + f"\nfunction delay()\n  return {delay_ms}\nend\n"
    path = workdir / "rate.lua"
    path.write_text(text)
    return path


def drive(url: str, lua: Path, seconds: int) -> wrk.WrkResult:
    cmd = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(lua), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=True)
    return wrk.parse(out.stdout)


def admin_text(port: str, path: str) -> str:
    import urllib.request

    token = os.environ.get("ROUTER_ADMIN_TOKEN", "bench-token")
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return str(resp.read().decode())


def capture_lines(page: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in page.splitlines():
        if line.startswith("router_capture_") and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = int(float(value))
    return out


def one(name: str, sink: str | None, backend: targets.Target, lua: Path, seconds: int,
        workdir: Path) -> dict[str, Any]:  # fmt: skip
    capture = f", capture: {{sink: {sink}}}" if sink else ""
    config = (
        "listen: 127.0.0.1:{port}\nadmin: {{listen: 127.0.0.1:{admin_port}}}\n"
        "logging: {{access_sample: 0}}\nbackends: {{b: {{url: http://127.0.0.1:{backend_port}}}}}\n"
        "routes: [{{name: all, match: {{path_prefix: /}}" + capture.replace("{", "{{").replace(
            "}", "}}") + ", strategy: {{split: {{weights: {{b: 100}}}}}}}}]\n"
    )  # fmt: skip
    router = targets.start_router(workdir, backend.port, name=name, config=config)
    try:
        drive(router.url, lua, 2)  # warm-up: pools, caches
        time.sleep(1.0)
        before_cpu, before_rss = cpu_seconds(router.pid), rss_mib(router.pid)
        before = capture_lines(admin_text(router.extra["admin_port"], "/metrics"))
        result = drive(router.url, lua, seconds)
        time.sleep(1.0)  # the last pass and the last write
        cpu = cpu_seconds(router.pid) - before_cpu
        after_rss = rss_mib(router.pid)
        after = capture_lines(admin_text(router.extra["admin_port"], "/metrics"))
    finally:
        router.stop()
    counted = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    return {
        "router": name,
        "requests": result.requests,
        "errors": result.errors,
        "rate": round(result.requests / seconds),
        "cpu_us_per_request": round(1e6 * cpu / max(1, result.requests), 2),
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "rss_mib": [round(before_rss, 1), round(after_rss, 1)],
        "capture": counted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--rate", type=int, default=1000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="capture-soak-"))
    lua = rate_lua(workdir, args.rate)
    backend = targets.start_backend(workdir)
    port, stop = stalled_receiver()
    file_sink = workdir / "capture.jsonl"
    try:
        rows = [
            one("off", None, backend, lua, args.seconds, workdir),
            one("file", f"{{file: {{path: {file_sink}, max_bytes: 1GiB}}}}", backend, lua,
                args.seconds, workdir),
            one("stalled-http", f"{{http: {{url: 'http://127.0.0.1:{port}/', timeout: 1s}}}}",
                backend, lua, args.seconds, workdir),
        ]  # fmt: skip
    finally:
        stop.set()
        backend.stop()
    lines = sum(1 for _ in file_sink.open()) if file_sink.exists() else 0
    for row in rows:
        print(row)
    print(f"file sink lines (warm-up included): {lines}")


if __name__ == "__main__":
    main()
