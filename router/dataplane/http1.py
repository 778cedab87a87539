"""HTTP/1.1 bytes shared by both sides of the proxy: heads, framing, hop-by-hop.

Everything here is pure and works on bytes. Header names are lower case (the
parsers' callbacks lower them once); values are passed through untouched.

Hop-by-hop headers describe one connection, not the message, so they never
cross the proxy in either direction: the fixed list of RFC 9110 §7.6.1 plus
every name listed in a `Connection` header. The proxy then frames each side
itself: Content-Length when the length is known, chunked toward an HTTP/1.1
peer otherwise, and an HTTP/1.0 client gets a close-delimited body instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from http import HTTPStatus
from typing import Final

import httptools

Header = tuple[bytes, bytes]

HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Request headers the proxy rewrites itself (they are re-added with our values).
REQUEST_OWN: Final = HOP_BY_HOP | {
    b"host",
    b"expect",
    b"content-length",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
}
RESPONSE_OWN: Final = HOP_BY_HOP | {b"x-router-backend"}

IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
CONTINUE_100: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK: Final = b"0\r\n\r\n"
MAX_REQUEST_ID: Final = 128
# Parsers that call back nobody. A closed connection swaps its own for one of these: a
# parser holds its protocol's bound methods, so protocol <-> parser is a reference cycle
# that only the cyclic GC would free; with it broken, refcounting frees the connection
# (and its buffers) the moment the transport lets go of it.
SPENT_REQUEST_PARSER: Final = httptools.HttpRequestParser(object())
SPENT_RESPONSE_PARSER: Final = httptools.HttpResponseParser(object())

# Request ids: a random per-process prefix and a 12-hex-digit counter. Unique
# without a syscall per request (os.urandom per request costs more than all of
# this). The counter's last 3 digits come from a table and the rest is formatted
# once per 4096 ids: `%012x` per request was ~2,400 instructions, a third of
# the id line's share of a request. `router --workers N` imports this module
# before it forks: each child draws its own prefix (and starts its counter
# again), or two workers would hand out the same ids.
_RID_LOW: Final = tuple(f"{i:03x}" for i in range(4096))


class _RequestIds:
    def __init__(self) -> None:
        self.prefix = ""
        self.n = 0
        self.head = ""
        self.reseed()

    def reseed(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.n = 0
        self.head = ""

    def next(self) -> str:
        n = self.n = self.n + 1
        low = n & 0xFFF
        if low == 0 or not self.head:
            self.head = f"{self.prefix}{n >> 12:09x}"
        return self.head + _RID_LOW[low]


_REQUEST_IDS: Final = _RequestIds()
os.register_at_fork(after_in_child=_REQUEST_IDS.reseed)


def new_request_id() -> str:
    """`<16 hex digits of this process><12 hex digits of a counter>`."""
    return _REQUEST_IDS.next()


# Content-Length lines by length, for the lengths seen first (bodies of ML
# requests and answers repeat their sizes); bounded, formatted otherwise.
_LENGTH_LINES: Final[dict[int, bytes]] = {}
_LENGTH_LINES_MAX: Final = 4096


def length_line(n: int) -> bytes:
    """`content-length: <n>\r\n`."""
    line = _LENGTH_LINES.get(n)
    if line is None:
        line = b"content-length: %d\r\n" % n
        if len(_LENGTH_LINES) < _LENGTH_LINES_MAX:
            _LENGTH_LINES[n] = line
    return line


def sane_request_id(value: bytes | None) -> str | None:
    """A client's request id if it is short and printable ASCII, else None."""
    if not value or len(value) > MAX_REQUEST_ID:
        return None
    if not all(0x21 <= c <= 0x7E for c in value):
        return None
    return value.decode("ascii")


def connection_tokens(value: bytes | None) -> frozenset[bytes]:
    """Header names listed in a Connection header (lower case)."""
    if not value:
        return frozenset()
    return frozenset(t.strip().lower() for t in value.split(b",") if t.strip())


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (never empty: that would end the body)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def reason_of(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


def filtered(headers: Iterable[Header], drop: frozenset[bytes], extra: frozenset[bytes]) -> bytes:
    """The header lines of `headers` minus `drop` and `extra`, as bytes."""
    out: list[bytes] = []
    for name, value in headers:
        if name not in drop and name not in extra:
            out += (name, b": ", value, b"\r\n")  # one join below, no format per line
    return b"".join(out)


def error_response(
    status: int, fields: dict[str, str], *, keep_alive: bool, extra: bytes = b""
) -> bytes:
    """A complete JSON error response with its head."""
    body = json.dumps(fields, separators=(",", ":")).encode()
    conn = b"keep-alive" if keep_alive else b"close"
    head = (
        b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: %b\r\n%b\r\n" % (status, reason_of(status), len(body), conn, extra)
    )
    return head + body


def no_body_status(status: int) -> bool:
    """Statuses whose responses never carry a body (RFC 9112 §6.3)."""
    return status < 200 or status in (204, 304)
