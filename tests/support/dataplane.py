"""An in-process data plane on a loopback port, and a raw HTTP/1.1 client.

`running_plane` builds a real `Runtime` (real `RouteTable`, a tiny fixed
strategy) around the given backends, serves it on port 0 and shuts it down
afterwards. `RawClient` speaks HTTP/1.1 over a plain socket so tests control
framing byte for byte and can read a response as it streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from router.config.spec import (
    BackendSpec,
    Config,
    HeadersSpec,
    LimitsSpec,
    ListenSpec,
    MatchSpec,
    RouteSpec,
)
from router.core.rollout import Rollout
from router.dataplane.plane import DataPlane, bound_port
from router.dataplane.routing import CompiledRoute, RouteTable
from router.dataplane.shadow_copy import MirrorCopy
from router.runtime import Runtime
from strategies.base import EVERY_COPY, Decision
from tests.support.rawbackend import RawBackend


class Fixed:
    """A strategy (and its spec) that always picks one backend, maybe mirrored."""

    override_header: bytes | None = None
    copies = EVERY_COPY

    def __init__(self, backend: str, mirrors: tuple[str, ...] = ()) -> None:
        self.backend = backend
        self.mirrors = mirrors

    def backends(self) -> tuple[str, ...]:
        return (self.backend, *self.mirrors)

    def decide(self, key: int, live: Rollout | None, override: bytes | None) -> Decision:
        return Decision(self.backend, "fixed", self.mirrors)


@dataclass
class Record:
    route: str
    backend: str
    status: int
    seconds: float
    reason: str
    request_id: str
    nbytes: int


@dataclass
class ListRecorder:
    records: list[Record] = field(default_factory=list)

    def record(
        self,
        route: str,
        backend: str,
        status: int,
        seconds: float,
        reason: str,
        request_id: str,
        nbytes: int,
    ) -> None:
        self.records.append(Record(route, backend, status, seconds, reason, request_id, nbytes))


def backend(name: str, port: int, **kw: object) -> BackendSpec:
    scheme = str(kw.pop("scheme", "http"))
    return BackendSpec(
        name=name,
        url=f"{scheme}://127.0.0.1:{port}",
        scheme=scheme,
        host=str(kw.pop("host", "127.0.0.1")),
        port=port,
        **kw,  # type: ignore[arg-type]
    )


def route(name: str, prefix: str, target: str, mirrors: tuple[str, ...] = ()) -> RouteSpec:
    return RouteSpec(name, MatchSpec(path_prefix=prefix), "fixed", Fixed(target, mirrors))


def make_runtime(
    backends: list[BackendSpec],
    routes: list[RouteSpec] | None = None,
    *,
    limits: LimitsSpec | None = None,
    headers: HeadersSpec | None = None,
) -> Runtime:
    """A runtime with one catch-all route to the first backend unless routes are given."""
    routes = routes if routes is not None else [route("main", "/", backends[0].name)]
    config = Config(
        limits=limits or LimitsSpec(),
        headers=headers or HeadersSpec(),
        backends={b.name: b for b in backends},
        routes=tuple(routes),
    )
    table = RouteTable([CompiledRoute(r, r.strategy) for r in routes])  # type: ignore[arg-type]
    return Runtime(config=config, table=table)


@dataclass
class Plane:
    plane: DataPlane
    port: int
    recorder: ListRecorder
    runtime: Runtime


@contextlib.asynccontextmanager
async def running_plane(
    runtime: Runtime,
    *,
    listen: ListenSpec | None = None,
    sweep: float = 0.05,
    drain: float = 1.0,
) -> AsyncIterator[Plane]:
    recorder = ListRecorder()
    plane = DataPlane(runtime, recorder, sweep_interval=sweep)
    await plane.start()
    server = await plane.serve(listen or ListenSpec(host="127.0.0.1", port=0))
    try:
        yield Plane(plane, bound_port(server), recorder, runtime)
    finally:
        await plane.shutdown(drain)


class CopySink:
    """A ShadowSink that keeps every copy it is offered."""

    def __init__(self) -> None:
        self.copies: list[MirrorCopy] = []

    def offer(self, copy: MirrorCopy) -> None:
        self.copies.append(copy)


@contextlib.asynccontextmanager
async def mirrored_plane() -> AsyncIterator[tuple[Plane, CopySink]]:
    """Route `r` to a RawBackend `b`, mirrored to `shadow`; the sink keeps the copies."""
    b = await RawBackend().start()
    try:
        rt = make_runtime(
            [backend("b", b.port), backend("shadow", 1)], [route("r", "/", "b", ("shadow",))]
        )
        async with running_plane(rt) as p:
            sink = CopySink()
            p.plane.shadow_sink = sink
            yield p, sink
    finally:
        await b.close()


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    head: bytes = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None


class RawClient:
    """One client connection; bytes out exactly as given, responses parsed loosely."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, *, tls: ssl.SSLContext | None = None) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self, wait: float = 5.0) -> Response:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), wait)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip().lower(), value.strip()))
        return Response(status, headers, b"", raw)

    async def response(self, *, head_request: bool = False, wait: float = 5.0) -> Response:
        """Read one whole response, framed by its headers (HEAD: no body)."""
        resp = await self.head(wait)
        if head_request or resp.status in (204, 304) or resp.status < 200:
            return resp
        if (resp.header("transfer-encoding") or "").lower() == "chunked":
            resp.body = await asyncio.wait_for(self._chunked(), wait)
        elif (length := resp.header("content-length")) is not None:
            resp.body = await asyncio.wait_for(self.reader.readexactly(int(length)), wait)
        else:
            resp.body = await asyncio.wait_for(self.reader.read(), wait)
        return resp

    async def _chunked(self) -> bytes:
        body = bytearray()
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return bytes(body)
            body += await self.reader.readexactly(size)
            await self.reader.readexactly(2)

    async def read_rest(self, wait: float = 5.0) -> bytes:
        """Everything until the proxy closes the connection."""
        return await asyncio.wait_for(self.reader.read(), wait)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def request(port: int, raw: bytes, **kw: bool) -> Response:
    """Send one raw request on a fresh connection and read its response."""
    client = await RawClient.open(port)
    try:
        await client.send(raw)
        return await client.response(**kw)
    finally:
        await client.close()


def get(path: str = "/", extra: str = "", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: example.test\r\n{extra}\r\n".encode()
