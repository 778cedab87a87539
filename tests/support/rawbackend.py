"""A scriptable HTTP/1.1 backend on a loopback port, for misbehaving on purpose.

Each test hands `RawBackend` a handler `(reader, writer) -> None` that owns one
accepted connection: it may answer properly, send garbage, reset, hang or
dribble. `read_request` parses one request (Content-Length or chunked body) so
scripts stay short; every parsed request is kept in `backend.requests`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Handler = Callable[["RawBackend", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawRequest:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    chunked: bool = False

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]


async def read_head(reader: asyncio.StreamReader) -> tuple[str, list[tuple[str, str]]] | None:
    """The first line and the headers (names lower case), or None at EOF."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = raw.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
    return lines[0], headers


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    head = await read_head(reader)
    if head is None:
        return None
    method, target, version = head[0].split(" ", 2)
    req = RawRequest(method, target, version, head[1])
    if (req.header("transfer-encoding") or "").lower() == "chunked":
        req.chunked = True
        req.body = await read_chunked(reader)
    elif length := req.header("content-length"):
        req.body = await reader.readexactly(int(length))
    return req


def response(
    status: int = 200,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    length: bool = True,
) -> bytes:
    lines = [f"HTTP/1.1 {status} X"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if length:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def echo_json(req: RawRequest) -> bytes:
    """What the echo backend answers: the request as it arrived, as JSON."""
    doc = {
        "method": req.method,
        "target": req.target,
        "headers": req.headers,
        "body": req.body.decode("latin-1"),
        "chunked": req.chunked,
    }
    return json.dumps(doc).encode()


async def echo(backend: RawBackend, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """A well-behaved keep-alive backend that echoes each request as JSON."""
    while (req := await backend.next_request(reader)) is not None:
        w.write(response(200, echo_json(req), {"content-type": "application/json"}))
        await w.drain()


@dataclass
class RawBackend:
    handler: Handler = echo
    requests: list[RawRequest] = field(default_factory=list)
    accepted: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def next_request(self, reader: asyncio.StreamReader) -> RawRequest | None:
        req = await read_request(reader)
        if req is not None:
            self.requests.append(req)
        return req

    async def start(self) -> RawBackend:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.accepted += 1
        self._writers.append(writer)
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            await self._server.wait_closed()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
