"""The heads the proxy writes: the request toward a backend, the answer toward the client.

Pure functions of what they are given (no exchange, no I/O), called once per
request each. One list, one join: cheaper than a formatted line per header;
`parts.append` (a C call once compiled), not `parts += (...)`, which builds a
tuple per line. Hop-by-hop headers are dropped both ways, with the names a
`Connection` header lists (RFC 9110 §7.6.1); `own` names header lines only the
router may set (the request id, an arm's rewritten headers), so a client's are
dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import httptools

from router.dataplane.http1 import Header, connection_tokens, filtered, length_line

if TYPE_CHECKING:
    from router.dataplane.request import Request
    from router.dataplane.server import ClientConnection
    from router.dataplane.upstream import UpstreamPool

NONE: Final[frozenset[bytes]] = frozenset()
# How an answer's body reaches the client (RFC 9112 §6.3): no body, the backend's
# length, chunks (an HTTP/1.1 client), or until the connection closes (HTTP/1.0).
MODE_NONE: Final = 0
MODE_LENGTH: Final = 1
MODE_CHUNKED: Final = 2
MODE_CLOSE: Final = 3
_PLAIN_CONNECTION: Final = frozenset({b"keep-alive", b"Keep-Alive", b"close", b"Close"})


def origin_form(target: bytes) -> bytes:
    """`/path?query` from any request target (absolute-form included)."""
    if target.startswith(b"/") or target == b"*":
        return target
    try:
        url = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        return target
    path = url.path or b"/"
    return path + b"?" + url.query if url.query else path


def answer_framing(
    method: bytes, version: str, status: int, length: int | None
) -> tuple[int, bytes]:
    """The answer's framing mode toward the client and the head line that says it."""
    if method == b"HEAD" or status < 200 or status == 204 or status == 304:
        if status == 204 or status < 200 or length is None:
            return MODE_NONE, b""
        return MODE_NONE, length_line(length)  # HEAD and 304 tell the length they would have
    if length is not None:
        return MODE_LENGTH, length_line(length)
    if version == "1.1":
        return MODE_CHUNKED, b"transfer-encoding: chunked\r\n"
    return MODE_CLOSE, b""


def request_head(
    req: Request,
    conn: ClientConnection,
    pool: UpstreamPool,
    target: bytes,
    drop: frozenset[bytes],
    rid_line: bytes,
    extra: bytes,
    framing: bytes,
) -> bytes:
    """The request's head toward `pool`'s backend; `drop`: header names not forwarded;
    then the router's own lines: the request id's, `extra` ones, the body's framing."""
    if req.connection is not None:
        drop = with_tokens(drop, req.connection)
    parts = [req.method, b" ", pool.base_path, target, b" HTTP/1.1\r\nhost: "]
    parts.append(pool.host_header)
    parts.append(b"\r\n")
    for name, value in req.headers:
        if name not in drop:
            parts.append(name)
            parts.append(b": ")
            parts.append(value)
            parts.append(b"\r\n")
    if req.host:
        parts.append(b"x-forwarded-host: ")
        parts.append(req.host)
        parts.append(b"\r\n")
    ip, xff = conn.client_ip_bytes, req.forwarded_for
    parts.append(b"x-forwarded-for: ")
    parts.append(xff + b", " + ip if xff else ip)
    parts.append(b"\r\nx-forwarded-proto: ")
    parts.append(conn.scheme)
    parts.append(b"\r\n")
    parts.append(rid_line)
    parts.append(extra)
    parts.append(framing)
    parts.append(b"\r\n")
    return b"".join(parts)


def response_head(
    status: int,
    reason: bytes,
    headers: list[Header],
    drop: frozenset[bytes],
    rid_line: bytes,
    backend_line: bytes,
    framing: bytes,
) -> bytes:
    """The answer's head toward the client; then the request id's and backend's lines
    and the body's framing."""
    parts = [b"HTTP/1.1 %d %b\r\n" % (status, reason)]
    for name, value in headers:
        if name not in drop:
            parts.append(name)
            parts.append(b": ")
            parts.append(value)
            parts.append(b"\r\n")
        elif name == b"connection" and with_tokens(drop, value) is not drop:
            # It names more headers to drop (rare): filter again, knowing them all.
            parts[1:] = [filtered(headers, drop, _response_tokens(headers))]
            break
    parts.append(rid_line)
    parts.append(backend_line)
    parts.append(framing)
    parts.append(b"\r\n")
    return b"".join(parts)


def _response_tokens(headers: list[Header]) -> frozenset[bytes]:
    for name, value in headers:
        if name == b"connection":
            return connection_tokens(value)
    return frozenset()


def with_tokens(drop: frozenset[bytes], connection: bytes) -> frozenset[bytes]:
    """`drop` plus the names a Connection header lists; `drop` itself when none is new."""
    if connection in _PLAIN_CONNECTION:
        return drop  # the usual values name nothing new: skip the split
    tokens = connection_tokens(connection)
    return drop if tokens <= drop else drop | tokens
