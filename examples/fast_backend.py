"""A backend fast enough to benchmark a proxy against: one fixed JSON answer.

Used by `bench` when nginx is not installed. The aiohttp model server spends
~100 µs of CPU per request, so a proxy in front of it would mostly measure the
model server; this one is an `asyncio.Protocol` on uvloop with httptools doing
the parsing, answering every request (any method, any path) with the same
pre-built bytes over keep-alive, pipelining included.

Run: `python -m examples.fast_backend --port 8199`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import cast

import httptools
import uvloop

BODY = b'{"label":"setosa","probabilities":[0.9,0.05,0.05],"confidence":0.9,"model":"fast"}'
_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
KEEP = _HEAD % len(BODY) + b"\r\n" + BODY
CLOSE = _HEAD % len(BODY) + b"Connection: close\r\n\r\n" + BODY


class FixedAnswer(asyncio.Protocol):
    """Answers each complete request at once; the body is read and ignored."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: cast, don't check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                self.transport.close()

    def on_message_complete(self) -> None:
        if self.transport is None:
            return
        if self.parser.should_keep_alive():
            self.transport.write(KEEP)
        else:
            self.transport.write(CLOSE)
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FixedAnswer, host, port, backlog=1024)
    print(f"fast backend listening on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Fixed-answer HTTP/1.1 backend for benchmarks.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8199)
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
