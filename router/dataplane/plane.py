"""The data plane: listeners, backend pools, the route memo, the sweeper, shutdown.

One per process. The client connections it accepts (router/dataplane/server.py) make
an `Exchange` per request (router/dataplane/proxy.py), which reads what it needs
here: the runtime (route table, live rollouts), the pools, the header settings
computed once per config, and the sinks of the features a route may turn on
(mirrors, stream clocks, drift, capture). Shutdown follows uvicorn's order: stop
accepting, let in-flight answers finish for `drain_timeout`, answer or abort
the rest, close pools last.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Final, cast

from router.config.spec import Config, ListenSpec, TLSSpec
from router.core.errors import ShuttingDown
from router.dataplane.accesslog import AccessLog
from router.dataplane.http1 import REQUEST_OWN, RESPONSE_OWN
from router.dataplane.proxy import Exchange
from router.dataplane.request import Request, header_kinds
from router.dataplane.routing import CompiledRoute, RouteTable
from router.dataplane.server import ClientConnection
from router.dataplane.shadow_copy import ShadowSink
from router.dataplane.sweeper import Sweeper
from router.dataplane.upstream import UpstreamPool
from router.ops.logs import Fanout
from router.runtime import Recorder, Runtime

if TYPE_CHECKING:
    from router.dataplane.capture_copy import CaptureSink
    from router.dataplane.stream_timing import StreamSink
    from router.drift.streams import DriftSink

MATCH_MEMO: Final = 1024  # (host, target) -> route answers remembered, at most
_UNKNOWN: Final = object()


class DataPlane:
    """Listeners, pools and the sweeper; the request path's owner."""

    def __init__(
        self, runtime: Runtime, recorder: Recorder, *, sweep_interval: float = 0.5
    ) -> None:
        self.runtime = runtime
        self.recorder = recorder
        # Called once per request each: a Fanout is flattened so it costs no extra call.
        self.records = recorder.flat() if isinstance(recorder, Fanout) else (recorder.record,)
        self.pools: dict[str, UpstreamPool] = {}
        self.routes: dict[tuple[bytes | None, bytes], CompiledRoute | None] = {}
        self.routes_of: RouteTable | None = None  # the table `routes` remembers answers of
        self.connections: set[ClientConnection] = set()
        self.servers: list[asyncio.Server] = []
        self.shadow_sink: ShadowSink | None = None
        self.stream_sink: StreamSink | None = None  # clocks for streamed answers
        self.drift_sink: DriftSink | None = None  # bodies of drift-watched routes
        self.capture_sink: CaptureSink | None = None  # bodies of captured routes
        self.access: AccessLog | None = None  # None: no access line (sample 0)
        self.mirror_errors = 0  # offers that raised; the request went on regardless
        # (route, backend, reason) -> requests a backend failed, as their clients saw it
        # (router/ops/telemetry.py exports them; counted on the failure path only)
        self.failures: dict[tuple[str, str, str], int] = {}
        self.stopping = False  # SIGTERM came: every answer closes its connection
        self.draining = False  # no longer accepting: idle connections close
        self.sweeper = Sweeper(self.connections, sweep_interval)
        self._drained: asyncio.Event | None = None
        self.apply_config(runtime.config)

    def apply_config(self, config: Config) -> None:
        """Pools per backend: unchanged specs keep theirs, others start afresh."""
        self.rid_name = config.headers.request_id.lower().encode()
        self.header_kinds = header_kinds(self.rid_name)
        self.request_drop = REQUEST_OWN | {self.rid_name}
        self.response_drop = RESPONSE_OWN | {self.rid_name, b"content-length"}
        self.router_backend = config.headers.router_backend
        self.backend_lines = {
            name: b"x-router-backend: %b\r\n" % name.encode() for name in config.backends
        }
        pools: dict[str, UpstreamPool] = {}
        for name, spec in config.backends.items():
            old = self.pools.get(name)
            pools[name] = old if old is not None and old.spec == spec else UpstreamPool(spec)
        for name, old in self.pools.items():
            if pools.get(name) is not old:
                old.retire()
        self.pools = pools

    def in_flight(self) -> dict[str, int]:
        """Requests received and not yet answered, per route: counted when asked (a
        scrape), so the request path keeps no gauge. Pipelined requests waiting behind
        another have no route yet and are not counted."""
        out: dict[str, int] = {}
        for conn in self.connections:
            for ex in conn.queue:
                if ex.t0 and not ex.finished and ex.route_name:
                    out[ex.route_name] = out.get(ex.route_name, 0) + 1
        return out

    def new_exchange(self, conn: ClientConnection, req: Request) -> Exchange:
        return Exchange(self, conn, req)

    def match(self, table: RouteTable, host: bytes | None, path: bytes) -> CompiledRoute | None:
        """`table.match`, remembered: a few distinct (host, path) pairs carry most traffic.

        The answer is pure in (table, host, path without the query); a new table
        (a reload) empties the memo, and so does passing MATCH_MEMO entries (paths
        that vary per request, /items/<id>, would otherwise grow it without bound;
        a miss costs a few dict lookups, router/dataplane/routing.py).
        """
        routes = self.routes
        if table is not self.routes_of:
            routes.clear()
            self.routes_of = table
        key = (host, path)
        route = routes.get(key, _UNKNOWN)
        if route is _UNKNOWN:
            if len(routes) >= MATCH_MEMO:
                routes.clear()
            route = routes[key] = table.match(host, path)
        return route  # type: ignore[return-value]

    async def start(self) -> None:
        self.sweeper.start()

    async def serve(
        self, listen: ListenSpec, *, reuse_port: bool = False, sock: socket.socket | None = None
    ) -> asyncio.Server:
        """Listen (TLS when `listen.tls`); `bound_port(server)` tells port 0's pick."""
        loop = asyncio.get_running_loop()
        ctx = server_ssl_context(listen.tls) if listen.tls else None
        scheme = b"https" if ctx else b"http"

        def factory() -> asyncio.Protocol:
            return cast(asyncio.Protocol, ClientConnection(self, scheme))

        if sock is not None:
            server = await loop.create_server(factory, sock=sock, ssl=ctx, backlog=1024)
        else:
            server = await loop.create_server(
                factory,
                listen.host,
                listen.port,
                ssl=ctx,
                reuse_port=reuse_port or None,
                backlog=1024,
            )
        self.servers.append(server)
        return server

    def connection_closed(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        if self._drained is not None and not self.connections:
            self._drained.set()

    def stop_soon(self) -> None:
        """Keep accepting and serving, but close each connection after its next answer,
        so that keep-alive clients reconnect (through their load balancer, elsewhere)."""
        self.stopping = True
        for conn in list(self.connections):
            conn.drain()

    async def shutdown(self, drain_timeout: float) -> None:
        """Stop accepting, let in-flight answers finish, answer 503 to (or abort) the
        rest at `drain_timeout`, close pools."""
        self.stopping = self.draining = True
        await asyncio.sleep(0)  # one more turn of the loop: accept what the kernel holds
        for server in self.servers:
            server.close()
        self._drained = asyncio.Event()
        now = perf_counter()
        for conn in list(self.connections):
            conn.shutdown(now)
        if self.connections:
            try:
                await asyncio.wait_for(self._drained.wait(), drain_timeout)
            except TimeoutError:
                for conn in list(self.connections):
                    conn.give_up(ShuttingDown(f"not answered within {drain_timeout:g}s"))
        await self.sweeper.stop()
        for server in self.servers:
            await server.wait_closed()
        for pool in self.pools.values():
            await pool.close()


def bound_port(server: asyncio.Server) -> int:
    """The port a listener got (useful after asking for port 0)."""
    # Read as an untyped attribute: uvloop's `sockets` is a list where typeshed says
    # tuple, and mypyc-compiled code checks declared types at run time.
    sockets: Sequence[socket.socket] = getattr(server, "sockets")  # noqa: B009
    port: int = sockets[0].getsockname()[1]
    return port


def server_ssl_context(tls: TLSSpec) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls.cert, tls.key)
    return ctx
