"""Errors of the request path, each knowing the status the client gets.

The hierarchy (h11's `error_status_hint` idea: the error carries its answer)::

    ProxyError(status)                 anything that ends one request early
    ├── NoRoute              404   no route matches the host and path
    ├── ShuttingDown         503   drain_timeout ended before the request was answered
    ├── ClientError                    the client's fault: answered, connection closed
    │   ├── BadRequest           400   malformed, or framing that could smuggle a request
    │   ├── RequestTimeout       408   head or body not received in time (slowloris)
    │   ├── RequestTooLarge      413   body over limits.max_body
    │   ├── HeadersTooLarge      431   request line + headers over limits.max_header_bytes
    │   └── VersionNotSupported  505   an HTTP version other than 1.0 and 1.1 (2.0 prior knowledge)
    └── UpstreamError                  the backend's fault
        ├── UpstreamConnectError 502   refused, unreachable, connect timeout
        │   └── UpstreamTLSError 502   the TLS handshake failed (wrong CA, name, client cert)
        ├── UpstreamProtocolError 502  reset, EOF or garbage before a complete response head
        ├── UpstreamTimeout      504   no response head within backend.timeout
        └── UpstreamBusy         503   every one of max_connections busy past queue_timeout

Once a response head went to the client, no status can be sent any more: the
proxy aborts the client connection instead, so a truncated body never looks
complete.

Every error also carries a `reason`, one word from a fixed set, for the metric
of backend failures (`router_upstream_failures_total{reason}`): refused,
connect_timeout, tls, unreachable, not_configured, reset, invalid, timeout, busy,
no_answer. A word, never the detail: the detail holds addresses and exception
text, which must not become label values.
"""

from __future__ import annotations

import ssl


class ProxyError(Exception):
    """One request ended early; `status` is what the client is told."""

    status: int = 502
    code: str = "proxy error"  # short words for the JSON body's "error"
    default_reason: str = "error"  # the metric's word when the raiser gives none

    def __init__(self, detail: str = "", reason: str = "") -> None:
        super().__init__(detail or self.code)
        self.detail = detail or self.code
        self.reason = reason or self.default_reason


class NoRoute(ProxyError):
    status = 404
    code = "no route"


class ShuttingDown(ProxyError):
    status = 503
    code = "router shutting down"


class ClientError(ProxyError):
    status = 400
    code = "bad request"


class BadRequest(ClientError):
    status = 400
    code = "bad request"


class RequestTimeout(ClientError):
    status = 408
    code = "request timeout"


class RequestTooLarge(ClientError):
    status = 413
    code = "request body too large"


class HeadersTooLarge(ClientError):
    status = 431
    code = "request header fields too large"


class VersionNotSupported(ClientError):
    status = 505
    code = "http version not supported"


class UpstreamError(ProxyError):
    status = 502
    code = "bad gateway"


class UpstreamConnectError(UpstreamError):
    status = 502
    code = "backend unreachable"
    default_reason = "unreachable"


class UpstreamTLSError(UpstreamConnectError):
    """Said in the answer's words: an operator reading a 502 must see it was TLS."""

    status = 502
    code = "backend TLS handshake failed"


class UpstreamProtocolError(UpstreamError):
    status = 502
    code = "backend closed or sent an invalid response"
    default_reason = "reset"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "backend timeout"
    default_reason = "timeout"


class UpstreamBusy(UpstreamError):
    status = 503
    code = "backend busy"
    default_reason = "busy"


def connect_reason(exc: BaseException) -> str:
    """The failure word of a connect that raised `exc` (see the module doc)."""
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "connect_timeout"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    return "unreachable"
