"""The access log: one pre-rendered JSON line per request, written in batches.

Theory of operation. The proxy calls `AccessLog.log` once per finished request
(router/dataplane/proxy.py, `Exchange._record`). The line is rendered right there into a
`str` with one f-string: no dict, no processor chain, no JSON encoder. Route,
backend, reason and method repeat, so their JSON-safe text is remembered; so is
the path of each target (as the route memo does, bounded). The timestamp's
seconds are formatted once per second, the milliseconds come from a table. A
request id or path holding a quote, a backslash or anything outside printable
ASCII goes through `json.dumps` instead, so every line stays valid JSON.

Lines are appended to a list. The list goes to the sink (router/ops/logfile.py) in
one write when it passes FLUSH_BYTES, or FLUSH_INTERVAL after its first line,
whichever comes first: one timer per interval, never one per request, never a
write per request. The sink never blocks the loop; what a full or stalled
destination cannot take is dropped there and counted.

`sample` keeps the share of requests logged (0..1) with an integer
accumulator, no random draw: 0.1 logs exactly one request in ten. A data plane
whose sample is 0 calls nothing at all (`DataPlane.access` is None).

Request and response bodies never reach this module.

Keys, in order: ts, event ("access"), request_id, route, backend, reason,
status, latency_ms, bytes, method, path (the target without its query string).
"""

from __future__ import annotations

import asyncio
import json
import time
from time import time as _now
from typing import Final, Protocol

FLUSH_BYTES: Final = 16 * 1024  # small enough to stay in cache: 64 KiB measured slower
FLUSH_INTERVAL: Final = 0.1  # seconds a line waits at most before its write
SCALE: Final = 1_000_000  # sampling resolution: one in a million
MEMO: Final = 1024  # remembered texts per kind, at most
_MS: Final = tuple(f".{i:03d}Z" for i in range(1000))
_CENTS: Final = tuple(f"{i:02d}" for i in range(100))


class Timer(Protocol):
    """A loop's timer handle (uvloop's are not asyncio.TimerHandle: typed by behaviour)."""

    def cancel(self) -> None: ...


class Sink(Protocol):
    """Where batches of lines go (router/ops/logfile.py `LogFile`)."""

    def write(self, data: bytes) -> None: ...

    def backlog(self) -> int: ...


def json_text(text: str) -> str:
    """`text` as it goes between the quotes of a JSON string."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return json.dumps(text)[1:-1]


class AccessLog:
    """Renders and buffers access lines; see the module docstring."""

    def __init__(self, sink: Sink, sample: float = 1.0) -> None:
        self.sink = sink
        self.step = 0
        self.set_sample(sample)
        self.credit = 0
        self.lines: list[str] = []
        self.size = 0
        self.rendered = 0  # lines made since start (router_access_log_lines_total)
        self.timer: Timer | None = None
        self.second = -1
        self.second_text = ""
        self.ms = -1
        self.ms_text = ""
        self.texts: dict[str, str] = {}
        self.methods: dict[bytes, str] = {}
        self.paths: dict[bytes, str] = {}

    @property
    def sample(self) -> float:
        return self.step / SCALE

    def set_sample(self, sample: float) -> None:
        self.step = round(min(max(sample, 0.0), 1.0) * SCALE)  # integers: no float drift

    def log(
        self,
        method: bytes,
        target: bytes,
        route: str,
        backend: str,
        status: int,
        seconds: float,
        reason: str,
        request_id: str,
        nbytes: int,
    ) -> None:
        """One finished request (`seconds`: its latency); logged for a `sample` share."""
        if self.step != SCALE:
            self.credit += self.step
            if self.credit < SCALE:
                return
            self.credit -= SCALE
        now = _now()
        cents = int(seconds * 100_000.0 + 0.5)  # hundredths of a millisecond
        rid = request_id
        if '"' in rid or "\\" in rid:  # else plain: ids are printable ASCII (sane_request_id)
            rid = json_text(rid)
        line = (
            f'{{"ts":"{self._ts(now)}","event":"access","request_id":"{rid}",'
            f'"route":"{self._text(route)}","backend":"{self._text(backend)}",'
            f'"reason":"{self._text(reason)}","status":{status},'
            f'"latency_ms":{cents // 100}.{_CENTS[cents % 100]},"bytes":{nbytes},'
            f'"method":"{self._method(method)}","path":"{self._path(target)}"}}\n'
        )
        self.lines.append(line)
        self.rendered += 1
        self.size += len(line)
        if self.size >= FLUSH_BYTES:
            self.flush()
        elif self.timer is None:
            self._arm()

    def flush(self) -> None:
        """Hand every buffered line to the sink in one write."""
        lines = self.lines
        if lines:
            data = "".join(lines).encode()
            lines.clear()
            self.size = 0
            self.sink.write(data)
        if self.timer is None and self.sink.backlog():
            self._arm()  # the destination was full: try again after an interval

    def close(self) -> None:
        """Last flush; no timer left behind (flush re-arms one for a backlog)."""
        self.flush()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _tick(self) -> None:
        self.timer = None
        self.flush()

    def _arm(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a unit test): lines go out at FLUSH_BYTES or flush()
        self.timer = loop.call_later(FLUSH_INTERVAL, self._tick)

    def _ts(self, now: float) -> str:
        ms = int(now * 1000.0)
        if ms == self.ms:  # busy: many lines share a millisecond
            return self.ms_text
        self.ms = ms
        self.ms_text = self._format_ts(now)
        return self.ms_text

    def _format_ts(self, now: float) -> str:
        second = int(now)
        if second != self.second:
            self.second = second
            self.second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self.second_text + _MS[min(int((now - second) * 1000.0), 999)]

    def _text(self, text: str) -> str:
        known = self.texts.get(text)
        if known is None:
            if len(self.texts) >= MEMO:
                self.texts.clear()
            known = self.texts[text] = json_text(text)
        return known

    def _method(self, method: bytes) -> str:
        known = self.methods.get(method)
        if known is None:
            if len(self.methods) >= MEMO:
                self.methods.clear()
            known = self.methods[method] = json_text(method.decode("latin-1"))
        return known

    def _path(self, target: bytes) -> str:
        known = self.paths.get(target)
        if known is None:
            if len(self.paths) >= MEMO:
                self.paths.clear()  # varying query strings would grow it without bound
            query = target.find(b"?")
            path = target[:query] if query >= 0 else target
            known = self.paths[target] = json_text(path.decode("latin-1"))
        return known
