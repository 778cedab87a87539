"""What LLM routes cost: per streamed chunk on the client's path, and per answer off it.

    python -m bench.stream_cost [--streams N] [--rounds R] [--json]

Issue 13's budget: 100 % shadowing of streamed answers may cost at most 10 µs
of router CPU per streamed chunk ON THE CLIENT'S PATH. Measured like
bench/inproc.py and bench/protocol_cost.py: the real data plane driven through
fake transports. A chat request goes in; the backend answers an event stream
of CHUNKS events (one token each, vLLM's shapes, each event its own HTTP chunk
and its own read) and the data plane writes each on to the client. Three
routes:

    plain   a split, no protocol: the stream passes through, nothing timed
            (what every stream cost before)
    timed   protocol openai: the stream is timed (first token, gaps, tokens)
    full    protocol openai, timed, 100 % mirrored to a shadow with the six
            text kinds: the answer is kept for the comparison (the copies are
            taken away between rounds without sending: sending, reading the
            shadow's stream and comparing are the mirror workers' business)

Off the client's path, for information: one comparison of two 1,000-token
streamed answers with the six text kinds (reading both streams as the
protocol does, then judging), and each kind alone at 1,000 tokens; and
reading a shadow's stream through the mirror client (timed, drained) per chunk.
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
from router.core.compare import Answer, compare
from router.core.compare_kinds import FieldSpec, compare_field
from router.core.protocols import get
from router.dataplane.metrics import Metrics
from router.dataplane.plane import DataPlane
from router.dataplane.routing import build_table
from router.dataplane.server import ClientConnection
from router.dataplane.upstream import UpstreamConnection
from router.runtime import Runtime
from router.shadow.mirror import Mirrors
from router.shadow.streams import StreamMetrics
from router.state.memory import MemoryStore

BUDGET_US = 10.0
CHUNKS = 100  # events per streamed answer on the client's path
_YAML = """listen: 127.0.0.1:8080
logging: {{access_sample: 0}}
backends:
  b: {{url: http://127.0.0.1:8081}}
  s: {{url: http://127.0.0.1:8082}}
routes: [{route}]
"""
_KINDS = (
    "{output: text, kind: refusal}, {output: text, kind: length_ratio},"
    " {output: text, kind: overlap}, {output: text, kind: json_valid},"
    " {output: finish_reason, kind: finish_reason}, {output: tool_calls, kind: tool_calls}"
)
ROUTES = {
    "plain": "{name: all, match: {path_prefix: /}, strategy: {split: {weights: {b: 100}}}}",
    "timed": "{name: all, match: {path_prefix: /}, protocol: openai,"
    " strategy: {split: {weights: {b: 100}}}}",
    "full": "{name: all, match: {path_prefix: /}, protocol: openai,"
    f" strategy: {{shadow: {{primary: b, shadows: [s], percent: 100, compare: [{_KINDS}]}}}}}}",
}
_TEXT = (
    "the model answers every question with care and a little patience so that each "
    "reader finds what they need in plain words about data drift canary shadow traffic"
)
_VOCABULARY = tuple(_TEXT.split())


def words(n: int, shift: int = 0) -> list[str]:
    return [(" " if i else "") + _VOCABULARY[(i * 7 + shift) % len(_VOCABULARY)] for i in range(n)]


def event(token: str | None, finish: str | None = None, role: bool = False) -> bytes:
    delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {"content": token}
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    chunk = {"id": "chatcmpl-8f2c", "object": "chat.completion.chunk", "created": 1733300000,
             "model": "llama-3-8b", "choices": [choice]}  # fmt: skip
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def stream(tokens: list[str]) -> list[bytes]:
    """The events of one answer: role, one per token (finish on the last), [DONE]."""
    last = len(tokens) - 1
    out = [event(None, role=True)]
    out += [event(t, "stop" if i == last else None) for i, t in enumerate(tokens)]
    return [*out, b"data: [DONE]\n\n"]


def _request() -> bytes:
    ask = [{"role": "user", "content": "Tell me about drift."}]
    body = json.dumps({"model": "llama-3-8b", "stream": True, "messages": ask}).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
    )


def _reads(events: list[bytes]) -> list[bytes]:
    """The backend's reads: the head with the first event, then one chunk per read."""
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n")  # fmt: skip
    chunks = [b"%x\r\n%b\r\n" % (len(e), e) for e in events]
    return [head + chunks[0], *chunks[1:-1], chunks[-1] + b"0\r\n\r\n"]


class Driver:
    """One data plane, one client connection and one backend connection."""

    def __init__(self, route: str) -> None:
        from bench.inproc import Transport  # late: bench.inproc imports bench.scenarios

        config = parse(_YAML.format(route=ROUTES[route]))
        runtime = Runtime(config=config, table=build_table(config))
        self.plane = DataPlane(runtime, Metrics())
        self.plane.apply_config(config)
        self.mirrors: Mirrors | None = None
        if route != "plain":
            self.plane.stream_sink = StreamMetrics(runtime, MemoryStore())
        if route == "full":
            self.mirrors = Mirrors(runtime, MemoryStore(), queue_size=1_000_000)
            self.mirrors._running = True  # lanes open on the first copy; no worker runs here
            self.mirrors.max_queued_bytes = 1 << 40
            self.plane.shadow_sink = self.mirrors
        self.client = ClientConnection(self.plane, b"http")
        self.client.connection_made(cast(asyncio.Transport, Transport(("127.0.0.1", 40000))))
        self.up = UpstreamConnection(self.plane.pools["b"])
        self.up.connection_made(cast(asyncio.Transport, Transport(("127.0.0.1", 8081))))
        self.plane.pools["b"].release(self.up)

    def round(self, req: bytes, reads: list[bytes], n: int) -> float:
        from bench.inproc import Transport

        written = cast(Transport, self.client.transport).written
        written.clear()
        cast(Transport, self.up.transport).written.clear()
        start = time.process_time()
        for _ in range(n):
            self.client.data_received(req)
            for read in reads:
                self.up.data_received(read)
        spent = time.process_time() - start
        if len(written) != n * len(reads) or not written[-1].endswith(b"0\r\n\r\n"):
            raise SystemExit(f"driver broken: {len(written)} writes for {n} streams")
        self._empty()
        return spent

    def _empty(self) -> None:
        if self.mirrors is not None:
            for lane in self.mirrors.lanes.values():
                while not lane.queue.empty():
                    lane.queue.get_nowait()
            self.mirrors.queued_bytes = 0


async def client_path(streams: int, rounds: int) -> dict[str, float]:
    """µs of CPU per streamed chunk of each route, on the client's path."""
    req, reads = _request(), _reads(stream(words(CHUNKS)))
    out: dict[str, float] = {}
    for name in ROUTES:
        driver = Driver(name)
        driver.round(req, reads, 200)  # warm-up
        best = min(driver.round(req, reads, streams) for _ in range(rounds))
        out[name] = best / (streams * len(reads)) * 1e6
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()  # the lanes' workers never ran; drop them
    return out


def _best(fn: Any, n: int) -> float:
    """µs per call: the best of 5 rounds of n calls."""
    spent = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(n):
            fn()
        spent.append(time.process_time() - start)
    return min(spent) / n * 1e6


def off_path() -> dict[str, float]:
    """Background work: one comparison of two 1,000-token streams; each kind alone."""
    openai = get("openai")
    a, b = b"".join(stream(words(1000))), b"".join(stream(words(1000, 3)))
    text_a, text_b = "".join(words(1000)), "".join(words(1000, 3))
    specs = [FieldSpec("text", k, name=k, min_similarity=0.5)
             for k in ("refusal", "length_ratio", "overlap", "json_valid")]  # fmt: skip
    specs += [FieldSpec("finish_reason", "finish_reason", name="finish_reason"),
              FieldSpec("tool_calls", "tool_calls", name="tool_calls")]  # fmt: skip
    out = {"chars": float(len(text_a))}
    out["read-stream"] = _best(lambda: openai.answer_items(a, ["text"]), 50)
    out["compare-all"] = _best(
        lambda: compare(specs, Answer(200, a, 1.0), Answer(200, b, 1.0), protocol=openai), 50
    )
    values = {"finish_reason": ("stop", "stop"), "tool_calls": ([], [])}
    for spec in specs:
        pair = values.get(spec.kind, (text_a, text_b))
        out[spec.kind] = _best(lambda s=spec, p=pair: compare_field(s, *p), 200)
    return out


def stream_cost(ctx: Context) -> Section:
    """`make bench`'s view: run in a child, so it imports what `router` would."""
    n = 200 if ctx.settings.duration < 5 else 1_000
    cmd = [sys.executable, "-m", "bench.stream_cost", "--streams", str(n), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    doc: dict[str, Any] = json.loads(out.stdout)
    p, bg = doc["client_path"], doc["off_path"]
    sec = Section(
        f"stream cost: {CHUNKS}-token streams, µs of CPU per streamed chunk, in process",
        ["route", "µs/chunk", "added µs/chunk"],
        data=doc,
    )
    for name in ROUTES:
        sec.rows.append([name, f"{p[name]:.2f}", f"{p[name] - p['plain']:+.2f}"])
    sec.checks.append(
        Check("100 % shadow of streams, extra µs/chunk", p["full"] - p["plain"], BUDGET_US, " µs")
    )
    kinds = ", ".join(
        f"{k} {bg[k]:.1f}"
        for k in ("length_ratio", "refusal", "json_valid", "finish_reason", "tool_calls", "overlap")
    )
    sec.lines.append(
        f"off the client's path, two 1,000-token streams ({bg['chars']:.0f} characters): reading "
        f"one {bg['read-stream']:.0f} µs, comparing both with six kinds {bg['compare-all']:.0f} µs;"
        f" each kind alone (µs): {kinds}"
    )
    return sec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    path = uvloop.run(client_path(args.streams, args.rounds))
    background = off_path()
    if args.json:
        print(json.dumps({"data_plane": native.data_plane(), "client_path": path,
                          "off_path": background}))  # fmt: skip
        return
    print(f"data plane {native.data_plane()}; {CHUNKS}-token streams")
    for key, us in path.items():
        print(f"client path {key:6} {us:6.2f} µs/chunk ({us - path['plain']:+.2f})")
    for key, us in background.items():
        print(f"off path    {key:14} {us:8.1f}" + ("" if key == "chars" else " µs"))


if __name__ == "__main__":
    main()
