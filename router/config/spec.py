"""The validated config: frozen, slotted dataclasses built by router/config/reader.py.

Everything here is a value: a hot reload parses a new `Config`, builds a new
routing table from it and swaps one reference; nothing is mutated in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from strategies.base import StrategySpec


@dataclass(frozen=True, slots=True)
class TLSSpec:
    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class ListenSpec:
    host: str = "0.0.0.0"
    port: int = 8080
    tls: TLSSpec | None = None


@dataclass(frozen=True, slots=True)
class TokenSpec:
    """One admin token: read from a file or an environment variable at start."""

    label: str  # who holds it: named in history for each change it makes
    role: str  # viewer (reads) | operator (reads and changes)
    file: str | None = None
    env: str | None = None


@dataclass(frozen=True, slots=True)
class AdminSpec:
    host: str = "127.0.0.1"
    port: int = 9901
    token_file: str | None = None  # else ROUTER_ADMIN_TOKEN
    tokens: tuple[TokenSpec, ...] = ()  # more tokens, each with a role and a label


@dataclass(frozen=True, slots=True)
class StateSpec:
    url: str | None = None  # None: in-memory, one process
    poll_interval: float = 5.0  # slow poll behind pub/sub, seconds
    url_file: str | None = None  # or: read the url from this file at start (a mounted Secret)


@dataclass(frozen=True, slots=True)
class LimitsSpec:
    max_header_bytes: int = 16 * 1024  # request line + headers; beyond: 431
    max_body: int = 10 * 1024 * 1024  # request body; beyond: 413
    header_timeout: float = 10.0  # a client must send its whole head within this
    body_timeout: float = 30.0  # ... and its body within this (slowloris)
    idle_timeout: float = 60.0  # keep-alive connection with no request
    drain_timeout: float = 10.0  # graceful shutdown waits this long for in-flight


@dataclass(frozen=True, slots=True)
class ShutdownSpec:
    # SIGTERM -> /readyz 503 at once, keep serving this long (load balancers and
    # Kubernetes endpoints take seconds to stop sending), then drain (limits.drain_timeout)
    delay: float = 5.0


@dataclass(frozen=True, slots=True)
class ProbesSpec:
    """The listener for the kubelet and Prometheus: /healthz, /readyz, /metrics; no state."""

    host: str = "0.0.0.0"
    port: int = 9902
    metrics: bool = True  # also serve /metrics here


@dataclass(frozen=True, slots=True)
class LoggingSpec:
    level: str = "info"
    access_sample: float = 1.0  # share of requests with an access line, 0..1
    access_file: str = "stderr"  # "stderr", "stdout" or a path (reopened on SIGHUP)
    log_bodies: bool = False  # never on unless the operator says so


@dataclass(frozen=True, slots=True)
class HeadersSpec:
    router_backend: bool = True  # X-Router-Backend on every response
    request_id: str = "x-request-id"


@dataclass(frozen=True, slots=True)
class BackendTLSSpec:
    """A backend's `tls:` block: the CA its certificate must chain to, and the client
    certificate the router presents (mTLS); cert and key come together."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class BackendSpec:
    name: str
    url: str
    scheme: str  # "http" or "https"
    host: str
    port: int
    base_path: str = ""  # prefix prepended to the request path ("" for none)
    timeout: float = 30.0  # from request sent to response head received
    connect_timeout: float = 2.0
    pool_size: int = 1024  # idle keep-alive connections kept
    health: str | None = None  # health path, e.g. /health
    tls_verify: bool = True
    ca_file: str | None = None
    max_connections: int = 1024  # open at once, busy or idle; beyond: requests wait
    queue_timeout: float = 5.0  # how long a request waits for one; then 503
    tls: BackendTLSSpec | None = None  # CA and client certificate (https only)


@dataclass(frozen=True, slots=True)
class MatchSpec:
    path_prefix: str = "/"
    host: str | None = None  # exact Host (without port), lower case


@dataclass(frozen=True, slots=True)
class StickySpec:
    header: str | None = None  # lower case
    cookie: str | None = None
    client_ip: bool = False


@dataclass(frozen=True, slots=True)
class DriftSpec:
    """A route's `drift:` block: which JSON fields to watch (router/drift/watch.py)."""

    inputs: tuple[str, ...] = ()  # names in the request (JSON paths, or the protocol's own)
    outputs: tuple[str, ...] = ()  # names in the answer; the first is the prediction
    reference: int = 2000  # requests after a reset that fix the bins
    reference_file: str | None = None  # or: JSON lines of request bodies
    threshold: float = 0.2  # PSI at or above this alarms
    min_samples: int = 500  # values in the window before a score may alarm
    window: float = 60.0  # seconds of the sliding window


# Headers kept in captured records when a route names none; credentials never are.
DEFAULT_KEPT_HEADERS = ("content-type", "accept", "user-agent")
DEFAULT_PATTERNS = ("email", "card", "phone")


@dataclass(frozen=True, slots=True)
class RedactSpec:
    """A route's `redact:` block: what is taken out of a payload before it is kept
    anywhere (capture sinks, shadow disagreement samples): router/core/redact.py."""

    headers: tuple[str, ...] = DEFAULT_KEPT_HEADERS  # allow-list, lower case
    remove: tuple[str, ...] = ()  # JSON paths taken out
    hash: tuple[str, ...] = ()  # JSON paths replaced by their length and a hash
    patterns: tuple[str, ...] = DEFAULT_PATTERNS  # shipped patterns for free text
    custom: tuple[tuple[str, str], ...] = ()  # (name, regex) of the operator's own


@dataclass(frozen=True, slots=True)
class FileSinkSpec:
    path: str
    max_bytes: int = 64 * 1024 * 1024  # a file this big is rotated
    keep: int = 5  # rotated files kept beside the current one


@dataclass(frozen=True, slots=True)
class HttpSinkSpec:
    url: str
    timeout: float = 2.0  # per POST
    retries: int = 2  # more tries of a failed POST
    batch: int = 64  # events taken from the queue at once
    concurrency: int = 4  # POSTs in flight at once
    queue: int = 10_000  # events waiting, at most; beyond: dropped, counted
    max_bytes: int = 32 * 1024 * 1024  # bytes waiting, at most
    source: str = "deploy-router"  # ce-source
    namespace: str = ""  # ce-namespace (KServe's), none when empty


@dataclass(frozen=True, slots=True)
class CaptureSpec:
    """A route's `capture:` block (router/capture/): which exchanges are kept, where."""

    mode: str = "all"  # request | response | all
    sample: float = 1.0  # share of requests captured
    arms: frozenset[str] = frozenset({"primary", "candidate", "shadow"})
    max_body: int = 64 * 1024  # per body; beyond: cut, and the record says so
    file: FileSinkSpec | None = None
    http: HttpSinkSpec | None = None


@dataclass(frozen=True, slots=True)
class RouteSpec:
    name: str
    match: MatchSpec
    strategy_kind: str  # the word under strategy:, e.g. "split"
    strategy: StrategySpec
    sticky: StickySpec | None = None
    drift: DriftSpec | None = None  # None: no drift watched on this route
    protocol: str = "json"  # how bodies become items (router/core/protocols/): json, v2, tfserving
    capture: CaptureSpec | None = None  # None: nothing of its payloads is kept
    redact: RedactSpec = RedactSpec()  # what capture and shadow samples take out


@dataclass(frozen=True, slots=True)
class ControllerSpec:
    interval: float = 1.0  # seconds between controller ticks
    lease_ttl: float = 5.0  # leader lease


def _empty_backends() -> Mapping[str, BackendSpec]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Config:
    listen: ListenSpec = ListenSpec()
    admin: AdminSpec = AdminSpec()
    state: StateSpec = StateSpec()
    limits: LimitsSpec = LimitsSpec()
    logging: LoggingSpec = LoggingSpec()
    headers: HeadersSpec = HeadersSpec()
    controller: ControllerSpec = ControllerSpec()
    backends: Mapping[str, BackendSpec] = field(default_factory=_empty_backends)
    routes: tuple[RouteSpec, ...] = ()
    source_hash: str = ""  # sha256 of the file's bytes, first 12 hex digits
    shutdown: ShutdownSpec = ShutdownSpec()
    probes: ProbesSpec | None = None  # None: no probes listener (the admin API still answers)
