"""A small CloudEvents receiver for capture tests: checks binary-mode headers, or stalls.

It accepts what KServe's inference logger sends (binary content mode: the
context attributes as `ce-*` headers, the data as the body) and records every
event; an event missing a required attribute is answered 400 and counted bad.
With `stall` set it never answers (until the test ends): a dead-slow sink.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

REQUIRED = ("ce-specversion", "ce-id", "ce-type", "ce-source")
TYPES = ("org.kubeflow.serving.inference.request", "org.kubeflow.serving.inference.response")


@dataclass
class Receiver:
    port: int = 0
    stall: bool = False
    events: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    waiting: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.stall:
            self.waiting += 1
            await asyncio.sleep(3600)
        headers = {k.lower(): v for k, v in request.headers.items()}
        missing = [h for h in REQUIRED if not headers.get(h)]
        if missing or headers.get("ce-specversion") != "1.0" or headers["ce-type"] not in TYPES:
            self.bad.append(f"{missing} {headers.get('ce-type')}")
            return web.Response(status=400)
        self.events.append((headers, body))
        return web.Response(status=202)


@asynccontextmanager
async def receiver(stall: bool = False) -> AsyncIterator[Receiver]:
    r = Receiver(stall=stall)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", r.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    r.port = runner.addresses[0][1]
    try:
        yield r
    finally:
        await runner.cleanup()
