"""Stream timing on the client's path, and what a client of a stream sees when its
backend fails: a JSON 502/504 before the head, an aborted stream after it."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from examples.openai_server import LLMOptions, start_openai_server
from router.config.spec import MatchSpec, RouteSpec
from router.dataplane.metrics import BOUNDS, bucket_of
from router.dataplane.stream_timing import StreamStats, StreamTimer, carries_token, is_event_stream
from router.shadow.streams import StreamMetrics, arm_figures, counter
from router.state.memory import MemoryStore
from tests.support.dataplane import Fixed, backend, make_runtime, running_plane
from tests.support.rawbackend import RawBackend, reset

ROLE = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'


def token(text: str, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
    return b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n"


USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":17}}\n\n'


def test_what_is_a_token() -> None:
    assert not carries_token(ROLE)
    assert carries_token(token("Hi"))
    assert carries_token(
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0}]}}]}\n\n'
    )
    assert carries_token(b'data: {"choices":[{"index":0,"text":"x"}]}\n\n')  # completions
    assert not carries_token(b"data: [DONE]\n\n")
    assert is_event_stream([(b"content-type", b"text/event-stream; charset=utf-8")])
    assert not is_event_stream([(b"content-type", b"application/json")])


def feed(timer: StreamTimer, *reads: bytes | list[bytes]) -> None:
    """Each read: one piece or several (a backend that frames each event as a chunk)."""
    for read in reads:
        for piece in read if isinstance(read, list) else [read]:
            timer.chunk(piece)
        timer.read()


def test_role_event_done_and_usage_are_not_tokens() -> None:
    """One first token, a gap per later read (one for a read of three events), none for
    [DONE]; tokens from the usage the stream reports."""
    stats = StreamStats()
    timer = StreamTimer(stats, time.perf_counter(), llm=True)
    feed(
        timer,
        ROLE,
        token("a"),
        [token("b"), token("c"), token("d", "stop")],
        USAGE,
        b"data: [DONE]\n\n",
    )
    timer.finish(True)
    assert sum(stats.first) == 1
    assert sum(stats.gaps) == 2  # the b-c-d read and the usage read
    assert (stats.streams, stats.tokens) == (1, 17)


def test_without_usage_tokens_are_the_events_from_the_first_token_on() -> None:
    stats = StreamStats()
    timer = StreamTimer(stats, time.perf_counter(), llm=True)
    feed(timer, ROLE, token("a"), token("b"), b"data: [DONE]\n\n")
    timer.finish(True)
    assert stats.tokens == 2


def test_an_aborted_or_tokenless_stream_is_not_counted_as_a_stream() -> None:
    stats = StreamStats()
    aborted = StreamTimer(stats, time.perf_counter(), llm=True)
    feed(aborted, ROLE, token("a"))
    aborted.finish(False)
    empty = StreamTimer(stats, time.perf_counter(), llm=True)
    feed(empty, ROLE, b"data: [DONE]\n\n")
    empty.finish(True)
    assert (sum(stats.first), stats.streams) == (1, 0)  # the first token was still seen


def test_any_event_is_a_token_on_other_routes() -> None:
    stats = StreamStats()
    timer = StreamTimer(stats, time.perf_counter(), llm=False)
    feed(timer, b"event: ping\ndata: 1\n\n", b"data: 2\n\n")
    timer.finish(True)
    assert (sum(stats.first), sum(stats.gaps), stats.tokens) == (1, 1, 2)


def llm_route(name: str, target: str) -> RouteSpec:
    return RouteSpec(name, MatchSpec(path_prefix="/"), "fixed", Fixed(target), protocol="openai")


async def test_a_stream_through_the_data_plane_is_timed_token_by_token() -> None:
    """5 tokens 40 ms apart: first token and gaps land in the 40 ms buckets, the client
    gets each token as it comes, /metrics and the store have the figures."""
    runner, port = await start_openai_server(LLMOptions(port=0, token_delay=0.04, tokens=5))
    rt = make_runtime([backend("llm", port)], [llm_route("chat", "llm")])
    store = MemoryStore()
    streams = StreamMetrics(rt, store)
    try:
        async with running_plane(rt) as p:
            p.plane.stream_sink = streams
            body = {"model": "llama-3-8b", "stream": True,
                    "messages": [{"role": "user", "content": "hi"}],
                    "stream_options": {"include_usage": True}}  # fmt: skip
            arrivals = []
            async with aiohttp.ClientSession() as session:
                started = time.monotonic()
                url = f"http://127.0.0.1:{p.port}/v1/chat/completions"
                async with session.post(url, json=body) as resp:
                    async for line in resp.content:
                        if line.startswith(b"data: {"):
                            arrivals.append(time.monotonic() - started)
            await streams.flush()
    finally:
        await runner.cleanup()
    stats = streams.stats[("chat", "llm", "primary")]
    assert (stats.streams, stats.tokens) == (1, 5)
    assert sum(stats.first) == 1
    assert sum(stats.gaps) in (4, 5)  # 4 token gaps (+ the usage read, unless it came along)
    first = next(i for i, n in enumerate(stats.first) if n)
    assert BOUNDS[first - 1] < 0.04 * 1.5  # about one delay in
    assert BOUNDS[first] > 0.04
    assert arrivals[1] < arrivals[-1] - 3 * 0.04  # nothing waited for the end
    figures = arm_figures(
        (await store.read_counters("chat", [counter("llm", "primary")]))["st:llm:primary"]
    )
    assert figures["streams"] == 1
    assert 0.03 < figures["inter_token_p50"] < 0.06
    streams.role_of = lambda route, backend: "split"
    lines = "\n".join(streams.metric_lines())
    labels = '{route="chat",backend="llm",role="split",answer="served"}'
    assert f"router_stream_first_token_seconds_count{labels} 1" in lines
    assert f"router_stream_inter_token_seconds_count{labels} {sum(stats.gaps)}" in lines


# -- failures: before the head a JSON error, after it an aborted stream ----------------


async def stream_backend(script: bytes, then: str) -> RawBackend:
    """Answers the head and `script`, then resets ("reset"), closes ("close") or stalls."""

    async def handler(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await b.next_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n")  # fmt: skip
        if script:
            w.write(b"%x\r\n%b\r\n" % (len(script), script))
        await w.drain()
        if then == "reset":
            reset(w)
        elif then == "close":
            w.close()
        else:
            await r.read()  # silent until the router gives up

    return await RawBackend(handler).start()


@pytest.mark.parametrize("then", ["reset", "close", "stall"])
@pytest.mark.parametrize("script", [b"", ROLE + token("Hel")])
async def test_after_the_head_the_client_sees_an_aborted_stream(script: bytes, then: str) -> None:
    """Never a 200 that looks complete: the chunked stream is cut without its last
    chunk, so the client's read fails (LiteLLM#36768 served an empty completion)."""
    b = await stream_backend(script, then)
    rt = make_runtime([backend("llm", b.port, timeout=0.3)], [llm_route("chat", "llm")])
    try:
        async with running_plane(rt, sweep=0.05) as p:
            p.plane.stream_sink = StreamMetrics(rt, MemoryStore())
            async with aiohttp.ClientSession() as session:
                url = f"http://127.0.0.1:{p.port}/v1/chat/completions"
                async with session.post(url, json={"stream": True}) as resp:
                    assert resp.status == 200
                    with pytest.raises(aiohttp.ClientPayloadError):
                        await resp.read()
            records = p.recorder.records
    finally:
        await b.close()
    assert [(r.backend, r.status) for r in records] == [("llm", 504 if then == "stall" else 502)]


@pytest.mark.parametrize(
    ("then", "status", "error"),
    [
        ("reset", 502, "backend closed or sent an invalid response"),
        ("stall", 504, "backend timeout"),
    ],
)
async def test_before_the_head_the_client_gets_json_naming_the_backend(
    then: str, status: int, error: str
) -> None:
    async def handler(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await b.next_request(r)
        if then == "reset":
            reset(w)
        else:
            await r.read()

    b = await RawBackend(handler).start()
    rt = make_runtime([backend("llm", b.port, timeout=0.3)], [llm_route("chat", "llm")])
    try:
        async with running_plane(rt) as p, aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{p.port}/v1/chat/completions"
            async with session.post(url, json={"stream": True}) as resp:
                doc = await resp.json()
    finally:
        await b.close()
    assert resp.status == status
    assert (doc["backend"], doc["error"]) == ("llm", error)


def test_routerctl_status_prints_stream_timing_per_arm() -> None:
    from router.ops.cli_views import stream_lines

    fields = {"n": 4, "tok": 80, "ms": 8200}
    fields |= {f"f{bucket_of(0.1)}": 3, f"f{bucket_of(0.3)}": 1, f"g{bucket_of(0.1)}": 76}
    arm = {"backend": "llama", "role": "primary", **arm_figures(fields)}
    lines = stream_lines({"arms": [arm]})
    assert lines[0].split() == [
        "STREAMS", "ROLE", "N", "TTFT", "P50/P95", "INTER-TOKEN", "P50/P95", "TOKENS", "TOTAL",
    ]  # fmt: skip
    cells = lines[1].split()
    assert cells[:3] == ["llama", "primary", "4"]
    assert cells[-4:] == ["20.0/stream,", "9.8/s", "2050ms", "mean"]
    assert stream_lines({"arms": []}) == []
