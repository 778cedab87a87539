"""A request head as the client sent it: what the proxy reads of it, and what it refuses.

`read_headers` makes one pass over the parsed header lines and picks out the
few the proxy acts on (framing, Host, Expect, Connection, X-Forwarded-For, the
configured request id) with one dict probe each; most headers are none of
these. It refuses what could smuggle a second request past the router (both
Content-Length and Transfer-Encoding, lengths that differ, a coding other
than chunked) and what RFC 9112 says a server must reject (an HTTP/1.1 request
without exactly one Host, §3.2); `version_error` says why a request line's
version is refused (HTTP/0.9, or anything but 1.0 and 1.1: 505).
"""

from __future__ import annotations

from typing import Final

from router.core.errors import BadRequest, ClientError, VersionNotSupported
from router.dataplane.http1 import Header


class Request:
    """One parsed request head, plus the few headers the proxy acts on."""

    __slots__ = (
        "chunked",
        "connection",
        "content_length",
        "error",
        "expect_continue",
        "forwarded_for",
        "headers",
        "host",
        "keep_alive",
        "method",
        "request_id",
        "target",
        "version",
    )

    def __init__(self, method: bytes, target: bytes, version: str, keep_alive: bool) -> None:
        self.method = method
        self.target = target
        self.version = version  # "1.1" or "1.0"
        self.keep_alive = keep_alive
        self.headers: list[Header] = []
        self.host: bytes | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.connection: bytes | None = None
        self.expect_continue = False
        self.request_id: bytes | None = None
        self.forwarded_for: bytes | None = None
        self.error: ClientError | None = None  # answered in turn, without a backend

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


_LENGTH: Final = 0
_CODING: Final = 1
_HOST: Final = 2
_EXPECT: Final = 3
_CONNECTION: Final = 4
_FORWARDED: Final = 5
_RID: Final = 6
_KINDS: Final = {
    b"content-length": _LENGTH,
    b"transfer-encoding": _CODING,
    b"host": _HOST,
    b"expect": _EXPECT,
    b"connection": _CONNECTION,
    b"x-forwarded-for": _FORWARDED,
}


def head_size(url: bytes, headers: list[Header]) -> int:
    """A request head's size as the limit counts it: target, names, values, 4 per line."""
    return len(url) + sum(len(name) + len(value) + 4 for name, value in headers)


def header_kinds(rid_name: bytes) -> dict[bytes, int]:
    """The headers `read_headers` acts on, by name, with the configured request id's."""
    return {**_KINDS, rid_name: _RID}


def read_headers(req: Request, headers: list[Header], kinds: dict[bytes, int]) -> None:
    """Pick out the headers the proxy acts on; refuse ambiguous framing."""
    # No container is made unless a request repeats a framing header (they rarely do).
    length: bytes | None = None
    lengths_differ = False
    codings: list[bytes] | None = None
    for name, value in headers:
        kind = kinds.get(name)  # one hash probe; most headers are none of these
        if kind is None:
            continue
        if kind == _LENGTH:
            value = value.strip()
            lengths_differ = lengths_differ or (length is not None and value != length)
            length = value
        elif kind == _HOST:
            if req.host is not None:
                raise BadRequest("more than one Host header")
            req.host = value
        elif kind == _CODING:
            codings = codings or []
            codings.append(value.strip().lower())
        elif kind == _EXPECT:
            req.expect_continue = value.strip().lower() == b"100-continue"
        elif kind == _CONNECTION:
            req.connection = value if req.connection is None else req.connection + b"," + value
        elif kind == _RID:
            req.request_id = value
        else:
            xff = req.forwarded_for
            req.forwarded_for = value if xff is None else xff + b", " + value
    req.headers = headers
    if req.host is None and req.version == "1.1":
        raise BadRequest("HTTP/1.1 request without a Host header")
    if codings is not None:
        if length is not None:
            raise BadRequest("both Content-Length and Transfer-Encoding")
        if codings != [b"chunked"]:
            raise BadRequest("unsupported Transfer-Encoding")
        req.chunked = True
    elif length is not None:
        if lengths_differ or not length.isdigit():
            raise BadRequest("invalid Content-Length")
        req.content_length = int(length)


def version_error(version: str) -> ClientError:
    if version == "0.9":
        return BadRequest("HTTP/0.9 request line (no HTTP version)")
    return VersionNotSupported(f"HTTP/{version} is not supported here: use HTTP/1.1")
