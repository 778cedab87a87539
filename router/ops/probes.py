"""The probes listener: what the kubelet and Prometheus may see, and nothing else.

    GET /healthz   200 while the process's event loop answers (liveness, startup)
    GET /readyz    200 ready (or degraded: state store down, still routing);
                   503 starting (data listener not up yet) or stopping (SIGTERM came)
    GET /metrics   the admin API's Prometheus text (OpenMetrics when the scraper's
                   Accept asks for it), when `probes.metrics` is true

The admin API binds loopback by default and serves the routes' state, the
dashboard and the changes; none of that belongs on a port the node and every
pod of the cluster can reach. This listener starts first and stops last, so a
startup probe sees the process alive while it connects to its state store, and
readiness says `stopping` through the whole of a graceful shutdown.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web

from router.config.spec import ProbesSpec
from router.ops.exposition import negotiate
from router.runtime import Runtime


def _json(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )


def build_probes_app(runtime: Runtime, page: Callable[[], str] | None) -> web.Application:
    """The probes application; `page` renders /metrics (None: no /metrics here)."""

    async def healthz(request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        return _json(*runtime.probe_readiness())

    app = web.Application(client_max_size=1024)  # GETs only: no body worth reading
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if page is not None:
        render = page

        async def metrics(request: web.Request) -> web.Response:
            body, content_type = negotiate(render(), request.headers.get("Accept", ""))
            return web.Response(body=body, headers={"Content-Type": content_type})

        app.router.add_get("/metrics", metrics)
    return app


class Probes:
    """Serves `build_probes_app` on `spec.host:spec.port` until stopped."""

    def __init__(self, spec: ProbesSpec, runtime: Runtime, page: Callable[[], str]) -> None:
        self.spec = spec
        self.app = build_probes_app(runtime, page if spec.metrics else None)
        self.runner: web.AppRunner | None = None
        self.port = spec.port  # the bound port (spec.port 0 asks for any free one)

    async def start(self) -> None:
        # access_log=None: a probe every few seconds from every node is noise, not news
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.spec.host, self.spec.port).start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
