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

import itertools
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

# Request ids: a random per-process prefix and a counter. Unique without a
# syscall per request (os.urandom per request costs more than all of this).
_RID_FORMAT: Final = os.urandom(8).hex() + "%012x"
_rid_next: Final = itertools.count(1).__next__


def new_request_id() -> str:
    return _RID_FORMAT % _rid_next()


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
