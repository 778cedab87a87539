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
from tests.support.dataplane import CopySink, Fixed, backend, make_runtime, running_plane
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
    assert sum(stats.gaps) == 1  # the b-c-d read; the usage read carries no token
    assert (stats.streams, stats.tokens) == (1, 17)


FINISH = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
TEXT_FINISH = b'data: {"choices":[{"index":0,"text":"","finish_reason":"length"}]}\n\n'


def test_the_finish_and_usage_events_are_neither_tokens_nor_gaps() -> None:
    """OpenAI, vLLM and LiteLLM end a stream with an event of finish_reason alone (an empty
    delta; `"text": ""` on /v1/completions), then the usage event: neither is a token.
    Found with the openai client: 20-token streams read 21 tokens per stream without
    usage (6 for a 5-word refusal), and each of those reads was timed as an
    inter-token gap of ~0 ms."""
    chat, completions, same_read = StreamStats(), StreamStats(), StreamStats()
    timer = StreamTimer(chat, time.perf_counter(), llm=True)
    feed(timer, ROLE, token("a"), token("b"), FINISH, b"data: [DONE]\n\n")
    timer.finish(True)
    text = b'data: {"choices":[{"index":0,"text":"%b","finish_reason":null}]}\n\n'
    timer = StreamTimer(completions, time.perf_counter(), llm=True)
    feed(timer, text % b"a", text % b" b", text % b" c", TEXT_FINISH, b"data: [DONE]\n\n")
    timer.finish(True)
    timer = StreamTimer(same_read, time.perf_counter(), llm=True)
    feed(timer, ROLE, token("a"), [token("b"), FINISH, USAGE.replace(b"17", b"2")])
    timer.finish(True)
    assert (chat.tokens, sum(chat.gaps)) == (2, 1)
    assert (completions.tokens, sum(completions.gaps)) == (3, 2)
    assert (same_read.tokens, sum(same_read.gaps)) == (2, 1)
    cut, whole = StreamStats(), token("c")  # the last token's event cut between two reads
    timer = StreamTimer(cut, time.perf_counter(), llm=True)
    feed(timer, [ROLE, token("a"), token("b")], token("b2"), whole[:30], whole[30:] + FINISH)
    timer.finish(True)
    assert (cut.tokens, sum(cut.gaps)) == (4, 2)
    last = StreamStats()  # TGI: the last token carries the finish reason: still a token
    timer = StreamTimer(last, time.perf_counter(), llm=True)
    feed(timer, token("a"), token("b", "stop"))
    timer.finish(True)
    assert (last.tokens, sum(last.gaps)) == (2, 1)


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


def test_a_usage_of_zero_tokens_on_a_stream_with_tokens_is_not_believed() -> None:
    """LiteLLM's proxy streams /v1/completions with `"usage": {"completion_tokens": 0}`
    in every chunk: 20-token streams were counted as 0 tokens (10.0 per stream shown
    over chat and completions streams alike)."""
    usage = b',"usage":{"completion_tokens":0,"prompt_tokens":0,"total_tokens":0}}\n\n'
    text = b'data: {"choices":[{"index":0,"text":"%b"}]' + usage
    stats = StreamStats()
    timer = StreamTimer(stats, time.perf_counter(), llm=True)
    end = b'data: {"choices":[{"finish_reason":"length","index":0}]' + usage
    feed(timer, text % b"care", text % b" router", text % b" at", end, b"data: [DONE]\n\n")
    timer.finish(True)
    assert (stats.streams, stats.tokens, sum(stats.gaps)) == (1, 3, 2)


@pytest.mark.parametrize("done", [True, False])
async def test_a_client_that_leaves_at_done_ends_a_complete_stream(done: bool) -> None:
    """The openai SDK stops reading at `data: [DONE]` and closes. When the backend's last
    chunk comes later (LiteLLM's proxy: 8 of 18 answers through it), the stream was
    recorded as a 502 of the backend (the error-rate gate's figure), its timing dropped
    and its shadow copy never sent. Now: the head's status, a complete stream, a copy.
    A client that leaves before [DONE] (a cancelled generation) is still no backend
    error, but neither a complete stream nor a copy."""
    events = ROLE + token("a") + token("b") + FINISH + (b"data: [DONE]\n\n" if done else b"")

    async def handler(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await b.next_request(r)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n")  # fmt: skip
        w.write(b"%x\r\n%b\r\n" % (len(events), events))
        await w.drain()
        await asyncio.sleep(0.3)  # the terminating chunk lags, as through LiteLLM
        w.write(b"0\r\n\r\n")
        await w.drain()
        await r.read()

    b = await RawBackend(handler).start()
    shadow = RouteSpec("chat", MatchSpec(path_prefix="/"), "fixed", Fixed("llm", ("copy",)),
                       protocol="openai")  # fmt: skip
    rt = make_runtime([backend("llm", b.port), backend("copy", 1)], [shadow])
    streams = StreamMetrics(rt, MemoryStore())
    try:
        async with running_plane(rt) as p:
            p.plane.stream_sink = streams
            sink = CopySink()
            p.plane.shadow_sink = sink
            reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
            body = b'{"stream": true}'
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: %d\r\n\r\n%b" % (len(body), body))  # fmt: skip
            seen = b""
            while b"[DONE]" not in seen and b'"b"' not in seen.split(b"\r\n\r\n", 1)[-1]:
                seen += await asyncio.wait_for(reader.read(65536), 5)
            writer.close()  # as the SDK does at [DONE]
            for _ in range(100):
                if p.recorder.records:
                    break
                await asyncio.sleep(0.02)
            records = p.recorder.records
    finally:
        await b.close()
    assert [(r.backend, r.status) for r in records] == [("llm", 200)]
    stats = streams.stats[("chat", "llm", "primary")]
    assert (stats.streams, stats.tokens) == ((1, 2) if done else (0, 0))
    assert len(sink.copies) == (1 if done else 0)
