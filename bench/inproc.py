"""The router's own CPU per request, without the kernel: an in-process driver.

    python -m bench.inproc [--requests N] [--rounds R]

The wrk figures mix our code with loopback I/O (~12 µs of the ~19 a request
costs) and with how the two cores were shared, so a change worth 0.5 µs is
lost in their noise. This drives the real data plane (config parsed from the
bench's YAML, the same recorders as `router`, the compiled modules when built)
through fake transports: request bytes into a client connection, the head it
writes to the backend checked, response bytes into the backend connection,
the response it writes to the client checked. It prints the best round's
process CPU per request, the least disturbed by neighbours.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any, cast

import uvloop

from bench.scenarios import Check, Context, Section
from bench.targets import router_yaml
from router import native
from router.config.reader import parse
from router.config.spec import CaptureSpec, FileSinkSpec
from router.dataplane.capture_copy import CaptureSink
from router.dataplane.metrics import Metrics
from router.dataplane.plane import DataPlane
from router.dataplane.routing import build_table
from router.dataplane.server import ClientConnection
from router.dataplane.upstream import UpstreamConnection
from router.ops.logfile import AccessLogging
from router.runtime import Runtime

BODY = b'{"features":[0.1,-0.2,0.3,0.4,0.5,-0.6,0.7,0.8]}'
# What wrk sends (bench/post.lua) and what the nginx bench backend answers.
REQUEST = (
    b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: %d\r\n"
    b"Content-Type: application/json\r\n\r\n%b" % (len(BODY), BODY)
)
ANSWER = b'{"label":1,"probabilities":[0.2,0.8],"model":"v1"}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 01:43:30 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: keep-alive\r\n"
    b"\r\n%b" % (len(ANSWER), ANSWER)
)


class Transport:
    """Enough of an asyncio transport for the data plane: it keeps what is written."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _plane(access_file: str | None, capture: bool = False) -> DataPlane:
    """The bench's router config; `access_file`: the default access log, written there;
    `capture`: the route captures every exchange (the request path's share: the tap and
    its hand-over; the background pass that writes the records is not on it)."""
    config = parse(router_yaml(port=8080, admin_port=9901, backend_port=8081))
    if access_file is not None:
        logging = replace(config.logging, access_sample=1.0, access_file=access_file)
        config = replace(config, logging=logging)
    if capture:
        spec = CaptureSpec(file=FileSinkSpec("/dev/null"))
        config = replace(config, routes=tuple(replace(r, capture=spec) for r in config.routes))
    runtime = Runtime(config=config, table=build_table(config))
    plane = DataPlane(runtime, Metrics())
    if capture:  # drained between rounds, outside the clock (the pass runs off the path)
        plane.capture_sink = CaptureSink(max_pending=10**8, max_bytes=2**62)
    plane.access = AccessLogging(config.logging).active()
    plane.apply_config(config)
    return plane


def _round(client: ClientConnection, upstream: UpstreamConnection, n: int) -> float:
    """CPU seconds for n request/response exchanges; checks every one was proxied."""
    to_backend = cast(Transport, upstream.transport).written
    to_client = cast(Transport, client.transport).written
    to_backend.clear()
    to_client.clear()
    sink = client.plane.capture_sink
    taken = 0
    start = time.process_time()
    for i in range(n):
        client.data_received(REQUEST)
        upstream.data_received(RESPONSE)
        if sink is not None and i % 64 == 63:  # as capture's pass does, every 50 ms
            taken += len(sink.take())
    spent = time.process_time() - start
    if sink is not None and taken + len(sink.take()) != n:
        raise SystemExit(f"driver broken: {taken} captured for {n} requests")
    if len(to_client) != n or not to_client[-1].startswith(b"HTTP/1.1 200 OK\r\n"):
        raise SystemExit(f"driver broken: {len(to_client)} responses for {n} requests")
    if not to_client[-1].endswith(ANSWER) or not to_backend[-1].endswith(BODY):
        raise SystemExit("driver broken: a body went missing")
    return spent


async def measure(
    requests: int, rounds: int, access_file: str | None = None, capture: bool = False
) -> float:
    plane = _plane(access_file, capture)
    client = ClientConnection(plane, b"http")
    client.connection_made(cast(asyncio.Transport, Transport(("127.0.0.1", 40000))))
    upstream = UpstreamConnection(plane.pools["b"])
    upstream.connection_made(cast(asyncio.Transport, Transport(("127.0.0.1", 8081))))
    plane.pools["b"].release(upstream)  # idle and keep-alive, as after the first request
    _round(client, upstream, 2_000)  # warm-up: memo tables, metrics slots, caches
    return min(_round(client, upstream, requests) for _ in range(rounds)) / requests


def _child(requests: int, *extra: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.inproc", "--requests", str(requests), "--json", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300)
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def in_process(ctx: Context) -> Section:
    """`make bench`'s view of it: run in a child, so that it imports what `router` would."""
    n = 20_000 if ctx.settings.duration < 5 else 50_000
    off = _child(n)
    on = _child(n, "--access-file", str(ctx.workdir / "inproc-access.log"))
    captured = _child(n, "--capture")
    cost = on["us"] - off["us"]
    capture_cost = captured["us"] - off["us"]
    sec = Section(
        "in-process data plane: CPU per request without the kernel (best of 5 rounds)",
        ["data plane", "config", "µs/request"],
        data={
            "access_log_off": off,
            "access_log_on": on,
            "access_log_us": cost,
            "capture": captured,
            "capture_us": capture_cost,
        },
    )
    sec.rows.append([off["data_plane"], "access log off", f"{off['us']:.2f}"])
    sec.rows.append([on["data_plane"], "default: access log on (to a file)", f"{on['us']:.2f}"])
    sec.rows.append(
        [captured["data_plane"], "access log off, capture 100 %", f"{captured['us']:.2f}"]
    )
    sec.lines.append(f"the access log costs {cost:+.2f} µs a request (lines rendered and written)")
    sec.lines.append(f"capture costs {capture_cost:+.2f} µs a request on the request path")
    sec.lines.append("the rest of the router's CPU per request above is loopback I/O and uvloop")
    sec.checks.append(Check("access log CPU per request (in-process)", cost, 2.0, "µs"))
    sec.checks.append(Check("capture CPU per request (in-process)", capture_cost, 5.0, "µs"))
    return sec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--access-file", help="with the default access log, written to this file (default: off)"
    )
    parser.add_argument(
        "--capture", action="store_true", help="the route captures 100 %% of its exchanges"
    )
    args = parser.parse_args()
    seconds = uvloop.run(measure(args.requests, args.rounds, args.access_file, args.capture))
    plane = native.data_plane()
    if args.json:
        print(json.dumps({"us": round(seconds * 1e6, 3), "data_plane": plane}))
    else:
        print(f"in-process data plane ({plane}): {seconds * 1e6:.2f} µs CPU per request")


if __name__ == "__main__":
    main()
