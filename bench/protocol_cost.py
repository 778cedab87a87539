"""What reading a route's model protocol costs, on the request path and off it.

    python -m bench.protocol_cost [--requests N] [--rounds R] [--json]

Issue 11's budget: a route with `protocol: v2`, a `drift:` block and 100 %
shadow comparison may cost at most 5 µs of router CPU per request ON THE
REQUEST PATH beyond the same route without them, and a batch of 64 rows must
not make the request path slower per request (parsing happens off it).

The request path is measured like bench/inproc.py: the real data plane driven
through fake transports, V2 requests in, V2 answers back, for four routes:
plain (a split, no protocol work) and full (protocol v2, drift on inputs and
outputs, 100 % mirrored to a shadow with `compare: [{output: predict}]`), with
batches of 1 and of 64 rows. The full route's exchanges hand their bodies to
the real `DriftSink` and their copies to the real `Mirrors` (taps granted to
every request, queues emptied between rounds without sending: the sending is
the mirror workers' business, off the request path, and so is parsing).

Off the request path the same bodies are judged as the background does: one
comparison of a primary and a shadow answer (router/core/compare.py through the
protocol), one drift observation of the request and the answer (router/drift/streams.py),
µs per request for 1 and 64 rows. Printed for information: that work is bounded
by the mirror queue and the drift sample, not by the request rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any, cast

import uvloop

from bench.scenarios import Check, Context, Section
from router import native
from router.config.reader import parse
from router.config.spec import DriftSpec
from router.core.compare import Answer, compare
from router.core.compare_kinds import FieldSpec
from router.core.protocols import get
from router.dataplane.metrics import Metrics
from router.dataplane.plane import DataPlane
from router.dataplane.routing import build_table
from router.dataplane.server import ClientConnection
from router.dataplane.upstream import UpstreamConnection
from router.drift.streams import DriftSink, RouteDrift
from router.runtime import Runtime
from router.shadow.mirror import Mirrors
from router.state.memory import MemoryStore

BUDGET_US = 5.0
_YAML = """listen: 127.0.0.1:8080
logging: {{access_sample: 0}}
backends:
  b: {{url: http://127.0.0.1:8081}}
  s: {{url: http://127.0.0.1:8082}}
routes: [{route}]
"""
_PLAIN = "{name: all, match: {path_prefix: /}, strategy: {split: {weights: {b: 100}}}}"
_FULL = (
    "{name: all, match: {path_prefix: /}, protocol: v2,"
    " drift: {inputs: [input-0], outputs: [predict]},"
    " strategy: {shadow: {primary: b, shadows: [s], percent: 100,"
    " compare: [{output: predict, kind: label}]}}}"
)


def v2_bodies(rows: int) -> tuple[bytes, bytes]:
    """(request, answer) of an iris-like V2 call with `rows` rows, as MLServer shapes them."""
    data = [round(0.1 * (i % 7) + 1.0, 3) for i in range(rows * 4)]
    tensor = {"name": "input-0", "shape": [rows, 4], "datatype": "FP64", "data": data}
    request = json.dumps({"inputs": [tensor]}).encode()
    predict = {"name": "predict", "shape": [rows, 1], "datatype": "INT64",
               "parameters": {"content_type": "np"}}  # fmt: skip
    outputs = [{**predict, "data": [i % 3 for i in range(rows)]}]
    answer = json.dumps({"model_name": "iris", "id": "x", "outputs": outputs}).encode()
    return request, answer


def _http(request: bytes, answer: bytes) -> tuple[bytes, bytes]:
    req = (
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(request), request)
    )
    resp = (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n%b" % (len(answer), answer)
    )
    return req, resp


class Driver:
    """One data plane, one client connection and one backend connection."""

    def __init__(self, route: str, full: bool) -> None:
        from bench.inproc import Transport  # late: bench.inproc imports bench.scenarios

        config = parse(_YAML.format(route=route))
        runtime = Runtime(config=config, table=build_table(config))
        self.plane = DataPlane(runtime, Metrics())
        self.plane.apply_config(config)
        self.mirrors: Mirrors | None = None
        if full:
            self.mirrors = Mirrors(runtime, MemoryStore(), queue_size=1_000_000)
            self.mirrors._running = True  # lanes open on the first copy; no worker runs here
            self.plane.shadow_sink = self.mirrors
            self.plane.drift_sink = DriftSink(max_pending=10**9)  # every request tapped
        self.client = ClientConnection(self.plane, b"http")
        self.client.connection_made(cast(asyncio.Transport, Transport(("127.0.0.1", 40000))))
        self.up = UpstreamConnection(self.plane.pools["b"])
        self.up.connection_made(cast(asyncio.Transport, Transport(("127.0.0.1", 8081))))
        self.plane.pools["b"].release(self.up)

    def round(self, req: bytes, resp: bytes, n: int) -> float:
        from bench.inproc import Transport

        written = cast(Transport, self.client.transport).written
        written.clear()
        cast(Transport, self.up.transport).written.clear()
        start = time.process_time()
        for _ in range(n):
            self.client.data_received(req)
            self.up.data_received(resp)
        spent = time.process_time() - start
        if len(written) != n or not written[-1].endswith(resp[resp.index(b"\r\n\r\n") + 4 :]):
            raise SystemExit(f"driver broken: {len(written)} responses for {n} requests")
        self._empty()
        return spent

    def _empty(self) -> None:
        """What the background would take away between rounds (not measured)."""
        if self.plane.drift_sink is not None:
            self.plane.drift_sink.take()
        if self.mirrors is not None:
            for lane in self.mirrors.lanes.values():
                while not lane.queue.empty():
                    lane.queue.get_nowait()
            self.mirrors.queued_bytes = 0


async def request_path(requests: int, rounds: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for rows in (1, 64):
        req, resp = _http(*v2_bodies(rows))
        for name, route, full in (("plain", _PLAIN, False), ("full", _FULL, True)):
            driver = Driver(route, full)
            driver.round(req, resp, 2_000)  # warm-up
            best = min(driver.round(req, resp, requests) for _ in range(rounds))
            out[f"{name}-{rows}"] = best / requests * 1e6
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()  # the lanes' workers never ran; drop them
    return out


def off_path(n: int = 2_000) -> dict[str, float]:
    """µs per request of the background's work: one comparison, one drift observation."""
    out: dict[str, float] = {}
    v2 = get("v2")
    spec = [FieldSpec("predict", "label")]
    for rows in (1, 64):
        request, answer = v2_bodies(rows)
        drift = RouteDrift("all", DriftSpec(inputs=("input-0",), outputs=("predict",)), 0.0, "v2")
        _observe(drift, request, answer, 2_000 // rows + 1)  # the reference is fitted first
        shadow = answer.replace(b'"id": "x"', b'"id": "y"')  # another body: parsed twice
        start = time.process_time()
        for _ in range(n):
            compare(spec, Answer(200, answer, 0.01), Answer(200, shadow, 0.01), protocol=v2)
        out[f"compare-{rows}"] = (time.process_time() - start) / n * 1e6
        start = time.process_time()
        _observe(drift, request, answer, n)
        out[f"drift-{rows}"] = (time.process_time() - start) / n * 1e6
    return out


def _observe(drift: RouteDrift, request: bytes, answer: bytes, n: int) -> None:
    for _ in range(n):
        for stream, body in ((drift.inputs, request), (drift.outputs, answer)):
            assert stream is not None
            for row in stream.rows(body):
                stream.observe("b", row)


def protocol_cost(ctx: Context) -> Section:
    """`make bench`'s view: run in a child, so it imports what `router` would."""
    n = 10_000 if ctx.settings.duration < 5 else 30_000
    cmd = [sys.executable, "-m", "bench.protocol_cost", "--requests", str(n), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    doc: dict[str, Any] = json.loads(out.stdout)
    p = doc["request_path"]
    sec = Section(
        "protocol cost: V2 route with protocol + drift + 100 % shadow vs plain, in process",
        ["rows", "plain µs/req", "full µs/req", "added µs", "compare µs", "drift µs"],
        data=doc,
    )
    for rows in (1, 64):
        added = p[f"full-{rows}"] - p[f"plain-{rows}"]
        sec.rows.append([str(rows), f"{p[f'plain-{rows}']:.2f}", f"{p[f'full-{rows}']:.2f}",
                         f"{added:+.2f}", f"{doc['off_path'][f'compare-{rows}']:.1f}",
                         f"{doc['off_path'][f'drift-{rows}']:.1f}"])  # fmt: skip
    added_1 = p["full-1"] - p["plain-1"]
    sec.checks.append(Check("protocol+drift+shadow extra µs/request", added_1, BUDGET_US, " µs"))
    ratio = p["full-64"] / p["full-1"]
    sec.lines.append(
        f"request path per request, 64 rows vs 1 row (full route): {ratio:.2f}x; compare and "
        "drift columns: background work per request, off the request path"
    )
    sec.checks.append(Check("request path 64 rows / 1 row", ratio, 1.25, "x"))
    return sec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    path = uvloop.run(request_path(args.requests, args.rounds))
    background = off_path()
    if args.json:
        print(json.dumps({"data_plane": native.data_plane(), "request_path": path,
                          "off_path": background}))  # fmt: skip
        return
    print(f"data plane {native.data_plane()}")
    for key, us in path.items():
        print(f"request path {key:9} {us:6.2f} µs/request")
    for key, us in background.items():
        print(f"background   {key:10} {us:6.1f} µs/request")


if __name__ == "__main__":
    main()
