"""An echo model server for capture and redaction tests: it answers with what it got.

Every answer repeats the request's JSON body (so what the request held is in the
answer too, and redaction must cover both) and names the backend. `/stream`
answers an OpenAI-style event stream whose text repeats the prompt, in several
reads. `stall` holds every answer until the test lets go.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Echo:
    name: str
    port: int = 0
    served: int = 0
    bodies: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.served += 1
        raw = await request.read()
        if request.path.endswith("/stream"):
            return await self.stream(request, raw)
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = raw.decode("utf-8", "replace")
        return web.json_response({"backend": self.name, "echo": doc, "label": 1})

    async def stream(self, request: web.Request, raw: bytes) -> web.StreamResponse:
        prompt = json.loads(raw).get("prompt", "") if raw else ""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for word in [*prompt.split(" "), "done"]:
            chunk = {"choices": [{"index": 0, "text": word + " "}], "model": self.name}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await asyncio.sleep(0.005)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


@asynccontextmanager
async def echo_backends(*names: str) -> AsyncIterator[dict[str, Echo]]:
    backends = {n: Echo(n) for n in names}
    runners: list[web.AppRunner] = []
    try:
        for backend in backends.values():
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", backend.handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            runners.append(runner)
            backend.port = runner.addresses[0][1]
        yield backends
    finally:
        for runner in runners:
            await runner.cleanup()
