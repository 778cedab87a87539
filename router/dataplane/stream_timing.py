"""Stream timing per arm: time to first token, gaps between tokens, tokens, total.

Theory of operation
-------------------
An answer is a stream when it is `text/event-stream` (Server-Sent Events)
without a Content-Length. For such an answer the data plane (router/dataplane/proxy.py,
for the client's answer) and the mirror client (router/shadow/client.py, for a
shadow's) hold a `StreamTimer`; every read of the backend's stream calls
`chunk` once, before that read is written on (nothing is buffered or delayed):

    first token   the first read carrying a token, timed from the request: for
                  a `protocol: openai` route an event whose choice has text, a
                  tool call or reasoning (the role-only first event of chat
                  streams is not a token); on any other route the first event
    inter-token   the time between two reads carrying events after the first
                  token (events that arrive in one read reach the client
                  together: one gap, as LLM benchmarks count it); a read of
                  nothing but `data: [DONE]` is not a token, nor on an `openai`
                  route the reads that end a stream with the finish-only event
                  and the usage event (the last two reads are held until the
                  end, then decoded)
    tokens        the answer's usage.completion_tokens when its last read has
                  it (and it is not 0: LiteLLM's placeholder on /v1/completions),
                  else its token events from the first token on
    total         request to the stream's last byte

A read costs a clock read, a `bytes.count` per piece and a bucket increment;
only the pieces before the first token are decoded (usually one or two), and
the last one once, for its usage. Counts go into `StreamStats` per (route, backend, role), role
"primary" for answers clients got and "shadow" for a shadow's copies; the
buckets are router/dataplane/metrics.py's (0.5 ms to 60 s, ~1.3x apart), so the canary's
`ttft` gate reads them with the latency gate's machinery.

router/shadow/streams.py owns the stats: Prometheus histograms, flushes to the
store (per rollout window, for the gate; cumulative, for status).
"""

from __future__ import annotations

import json
from time import perf_counter
from typing import Final, Protocol

from router.dataplane.metrics import NBUCKETS, bucket_of

EVENT_STREAM: Final = b"text/event-stream"
DONE_READ: Final = b"data: [DONE]"


class StreamStats:
    """Cumulative stream figures of one (route, backend, role)."""

    __slots__ = ("first", "first_sum", "gap_sum", "gaps", "sent", "streams", "tokens", "total")

    def __init__(self) -> None:
        self.streams = 0  # streams that ended
        self.tokens = 0
        self.total = 0.0  # seconds, summed over streams
        self.first = [0] * NBUCKETS  # time to first token, latency buckets
        self.gaps = [0] * NBUCKETS  # inter-token gaps
        self.first_sum = 0.0  # seconds (Prometheus _sum)
        self.gap_sum = 0.0
        self.sent = [0] * (3 + 2 * NBUCKETS)  # as of the last flush (stream_metrics)

    def counts(self) -> list[int]:
        """streams, tokens, total ms, first-token buckets, gap buckets: the flushed order."""
        return [self.streams, self.tokens, round(self.total * 1000), *self.first, *self.gaps]


class StreamSink(Protocol):
    """Hands out a timer for a client's answer that is a stream (router/shadow/streams.py)."""

    def timer(
        self, route: str, backend: str, headers: list[tuple[bytes, bytes]], start: float
    ) -> StreamTimer | None: ...


def is_event_stream(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value[:17].lower() == EVENT_STREAM
    return False


class StreamTimer:
    """One streamed answer's clock (see the module docstring).

    `chunk` sees every piece of the body (several per read when the backend
    frames each event as its own HTTP chunk); `read` closes one backend read."""

    __slots__ = (
        "cur",
        "ended",
        "events",
        "first",
        "last",
        "llm",
        "new_data",
        "new_events",
        "new_gap",
        "old_data",
        "old_events",
        "old_gap",
        "pending",
        "start",
        "stats",
        "tail",
        "token",
    )

    def __init__(self, stats: StreamStats, start: float, llm: bool) -> None:
        self.stats = stats
        self.start = start  # perf_counter when the request went out
        self.llm = llm  # protocol openai: tokens are told apart from other events
        self.first = 0.0  # perf_counter of the first token; 0: none yet
        self.last = 0.0
        self.events = 0  # events from the first token on
        self.pending = 0  # events of the current read
        self.token = False  # a token was seen (the first one is timed at its read's end)
        self.tail = b""  # the last piece with an event: usage lives there
        self.ended = False  # `data: [DONE]` came: the stream is whole, whatever follows
        # openai: the last two reads after the first token are held, not yet counted:
        # a stream ends with the finish-only event and the usage event, which are no
        # tokens and no gaps; only `finish` can tell (it decodes them, once a stream)
        self.cur = b""  # the current read's pieces (joined only when a read has several)
        self.old_gap = self.new_gap = 0.0  # the held reads: the older and the newer
        self.old_events = self.new_events = 0  # 0: none held
        self.old_data = self.new_data = b""

    def chunk(self, data: bytes) -> None:
        n = data.count(b"\ndata:") + (1 if data.startswith(b"data:") else 0)
        if not n:
            return
        done = data.count(DONE_READ)
        if done:
            self.ended = True
            n -= done
        if n <= 0:
            return
        self.tail = data
        if not self.token:
            if self.llm:  # decoded: the role-only event of a chat stream is no token
                n = token_events(data)
                if not n:
                    return
            self.token = True
        elif self.llm:
            self.cur = self.cur + data if self.cur else data
        self.pending += n

    def read(self) -> None:
        pending = self.pending
        if not pending:
            return
        self.pending = 0
        now = perf_counter()
        stats = self.stats
        if self.first == 0.0:
            self.first = now
            stats.first[bucket_of(now - self.start)] += 1
            stats.first_sum += now - self.start
            self.events += pending
            self.cur = b""
        elif self.llm:
            if self.old_events:
                self._count(self.old_gap, self.old_events)
            self.old_gap, self.old_events, self.old_data = (
                self.new_gap,
                self.new_events,
                self.new_data,
            )
            self.new_gap, self.new_events, self.new_data = now - self.last, pending, self.cur
            self.cur = b""
        else:
            self._count(now - self.last, pending)
        self.last = now

    def _count(self, gap: float, events: int) -> None:
        stats = self.stats
        stats.gaps[bucket_of(gap)] += 1
        stats.gap_sum += gap
        self.events += events

    def _settle(self) -> None:
        """Count the held reads: a newest read with no token (the finish-only and
        usage events) is dropped, and then the older one too if it has none; the
        last read with one counts its token events exactly. The older is decoded
        joined to the newer, so an event cut between the two reads is whole."""
        new = (self.new_gap, self.new_events)
        old = (self.old_gap, self.old_events)
        new_tokens = token_events(self.new_data) if new[1] else 0
        old_tokens = 0
        if old[1] and not new_tokens:
            old_tokens = token_events(self.old_data + self.new_data)
        self.old_events = self.new_events = 0
        self.old_data = self.new_data = b""
        if old[1] and (new_tokens or old_tokens):
            self._count(old[0], old[1] if new_tokens else old_tokens)
        if new_tokens:
            self._count(new[0], new_tokens)

    def finish(self, complete: bool) -> None:
        """The stream ended (`complete`: as the backend meant it to)."""
        self.read()
        self._settle()
        stats, tail = self.stats, self.tail
        self.tail = b""
        if not complete or self.first == 0.0:
            return
        stats.streams += 1
        stats.total += perf_counter() - self.start
        used = usage_tokens(tail)
        stats.tokens += used if used > 0 else self.events  # 0: a proxy's placeholder


def _events(data: bytes) -> list[object]:
    out: list[object] = []
    for line in data.split(b"\n"):
        if line.startswith(b"data:") and b"[DONE]" not in line:
            try:
                out.append(json.loads(line[5:]))
            except ValueError:
                continue  # a read may end inside an event: the next read has the rest
    return out


def carries_token(data: bytes) -> bool:
    """An OpenAI event of this read whose choice carries text, a tool call or reasoning."""
    return token_events(data) > 0


def token_events(data: bytes) -> int:
    """The OpenAI events of this piece whose choice carries a token."""
    n = 0
    for event in _events(data):
        choices = event.get("choices") if isinstance(event, dict) else None
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and _has_token(choice):
                n += 1
                break
    return n


def _has_token(choice: dict[str, object]) -> bool:
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return bool(choice.get("text"))  # /v1/completions
    return any(value and key != "role" for key, value in delta.items())


def usage_tokens(tail: bytes) -> int:
    """usage.completion_tokens from the last read of a stream; -1 when absent."""
    if b'"usage"' not in tail:
        return -1
    for event in reversed(_events(tail)):
        usage = event.get("usage") if isinstance(event, dict) else None
        tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if isinstance(tokens, int) and not isinstance(tokens, bool):
            return tokens
    return -1
