"""The HTTP sink: CloudEvents in binary mode, in the shape of KServe's inference logger.

Each captured exchange becomes two events that share one `ce-id` (the request
id): `org.kubeflow.serving.inference.request` with the redacted request and
`org.kubeflow.serving.inference.response` with the answer; a shadow's answer is
one more response event under the same id. The arm is `ce-endpoint` (the
backend), its role `ce-component` (primary, candidate, shadow), the route
`ce-inferenceservicename`; the event's data is the body (JSON or text), the
context attributes are `ce-*` headers (binary content mode), so a receiver
written for KServe's logger reads them unchanged.

Never blocking, never growing: `offer` puts a record's events on a queue
bounded by count (`queue`) and bytes (`max_bytes`), or refuses (the caller
counts the drop). `concurrency` sender tasks take up to `batch` records at a
time and POST their events on keep-alive connections, each POST bounded by
`timeout` and tried `retries` more times with a short backoff; a record whose
events cannot all be delivered is counted failed. A slow or dead receiver
therefore holds at most `concurrency` POSTs and a full queue; the rest is
dropped and counted.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Final

import aiohttp
import orjson
import structlog

from router.capture.export import content
from router.config.spec import HttpSinkSpec

log = structlog.get_logger("router.capture")

REQUEST_TYPE: Final = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE: Final = "org.kubeflow.serving.inference.response"
BACKOFF: Final = 0.1  # seconds before the first retry; doubled each time

# the record's ce-* attributes (shared by its events), ce-type, content type, data
Event = tuple[dict[str, str], str, str, bytes]
Queued = tuple[str, str, list[Event], int]  # route, kind, events, bytes


def _data(part: object) -> tuple[str, bytes]:
    kept = content(part)
    if isinstance(kept, str):
        return "text/plain; charset=utf-8", kept.encode()
    return "application/json", orjson.dumps(kept if kept is not None else part)


def events(record: dict[str, Any], spec: HttpSinkSpec) -> list[Event]:
    """The record's events (labels are kept by the file sink only)."""
    kind = record.get("kind")
    if kind not in ("exchange", "shadow"):
        return []
    base = {
        "ce-specversion": "1.0",
        "ce-id": str(record["id"]),
        "ce-source": spec.source,
        "ce-time": str(record["time"]),
        "ce-inferenceservicename": str(record["route"]),
        "ce-endpoint": str(record["arm"]),
        "ce-component": str(record["role"]),
    }
    if spec.namespace:
        base["ce-namespace"] = spec.namespace
    out: list[Event] = []
    for key, ce_type in (("request", REQUEST_TYPE), ("response", RESPONSE_TYPE)):
        if key in record:
            ctype, data = _data(record[key])
            out.append((base, ce_type, ctype, data))
    return out


class HttpSink:
    """One URL's queue and senders; shared by every route that names the same URL."""

    kind = "http"

    def __init__(self, spec: HttpSinkSpec) -> None:
        self.spec = spec
        self.queue: deque[Queued] = deque()
        self.queued_events = 0
        self.queued_bytes = 0
        self.written: dict[tuple[str, str], int] = {}
        self.failed: dict[str, int] = {}
        self.posts = 0  # POSTs answered 2xx
        self._session: aiohttp.ClientSession | None = None
        self._senders: set[asyncio.Task[None]] = set()
        self._down = False

    def offer(self, route: str, kind: str, record: dict[str, Any], line: bytes) -> bool:
        spec = self.spec
        if kind == "label":
            return True  # nothing this sink sends: not a drop
        if self.queued_events + 2 > spec.queue or self.queued_bytes + len(line) > spec.max_bytes:
            return False  # full: refused before any work is spent on its events
        found = events(record, spec)
        size = sum(len(event[3]) for event in found)
        self.queue.append((route, kind, found, size))
        self.queued_events += len(found)
        self.queued_bytes += size
        return True

    def depth(self) -> int:
        return self.queued_events

    async def flush(self) -> None:
        """Start senders while there is work (never awaited for their POSTs)."""
        if not self.queue:
            return
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.spec.concurrency)
            self._session = aiohttp.ClientSession(connector=connector)
        loop = asyncio.get_running_loop()
        while len(self._senders) < min(self.spec.concurrency, len(self.queue)):
            task = loop.create_task(self._send(), name=f"capture-http:{len(self._senders)}")
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)

    async def _send(self) -> None:
        while self.queue:
            batch = [self.queue.popleft() for _ in range(min(self.spec.batch, len(self.queue)))]
            for route, kind, found, size in batch:
                self.queued_events -= len(found)
                self.queued_bytes -= size
                ok = True
                for base, ce_type, ctype, body in found:
                    headers = {**base, "ce-type": ce_type, "content-type": ctype}
                    ok = ok and await self._post(headers, body)
                counts = self.written
                if ok:
                    counts[(route, kind)] = counts.get((route, kind), 0) + 1
                else:
                    self.failed[route] = self.failed.get(route, 0) + 1

    async def _post(self, headers: dict[str, str], body: bytes) -> bool:
        session, spec = self._session, self.spec
        if session is None:
            return False
        timeout = aiohttp.ClientTimeout(total=spec.timeout)
        for attempt in range(spec.retries + 1):
            if attempt:
                await asyncio.sleep(BACKOFF * 2 ** (attempt - 1))
            try:
                async with session.post(
                    spec.url, data=body, headers=headers, timeout=timeout
                ) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        self.posts += 1
                        self._health(True)
                        return True
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
        self._health(False)
        return False

    def _health(self, ok: bool) -> None:
        if ok == self._down:  # transitions only
            self._down = not ok
            log.warning("capture sink back" if ok else "capture sink failing", url=self.spec.url)

    async def close(self) -> None:
        """Give the queue one timeout to drain, then stop; what is left is not sent."""
        if self._senders:  # they end when the queue is empty
            await asyncio.wait(list(self._senders), timeout=self.spec.timeout)
        for task in list(self._senders):
            task.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
