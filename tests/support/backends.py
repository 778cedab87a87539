"""Small real model backends for integration tests: aiohttp on loopback.

Each backend answers every path with a JSON body naming itself, so a test can
tell which backend served a request from the body as well as from the router's
X-Router-Backend header; it counts what it served.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class NamedBackend:
    name: str
    port: int = 0
    served: int = 0
    status: int = 200
    error_every: int = 0  # answer 500 to every Nth request (0: never)
    delay: float = 0.0  # seconds added before answering
    seen_headers: list[dict[str, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        self.served += 1
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        failing = self.error_every and self.served % self.error_every == 0
        return web.json_response(
            {"backend": self.name, "path": request.path_qs, "bytes": len(body)},
            status=500 if failing else self.status,
        )


@asynccontextmanager
async def named_backends(*names: str) -> AsyncIterator[dict[str, NamedBackend]]:
    """Start one aiohttp server per name on a free port; stop them all after."""
    backends = {n: NamedBackend(n) for n in names}
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
            server = site._server
            assert server is not None  # started just above
            backend.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        yield backends
    finally:
        for runner in runners:
            await runner.cleanup()
