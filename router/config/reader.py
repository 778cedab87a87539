"""config.yaml -> the frozen `Config` of router/config/spec.py, with every error at once.

Theory of operation. The file is read by router/config/yamlload.py (safe YAML, duplicate
keys refused, bounded in size, nesting and alias expansion) and walked once
with `confkit.Node`, which records each problem as `path: message, got value`
and hands back a default so reading can go on. At
the end, any recorded problem raises `ConfigError` with the full list, so an
operator fixes a file in one round (`routerctl validate` prints them all).

Backends are read before routes so that each strategy block can check the
names it uses; a backend with a bad field still counts as defined, so one typo
in its URL does not cascade into "undefined backend" errors on every route.
Each strategy parses its own block through the registry; this module only
checks that `strategy:` holds exactly one known word.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from types import MappingProxyType
from typing import Any
from urllib.parse import SplitResult, urlsplit

from router.config import checks, yamlload
from router.config.access import read_backend_tls, read_tokens
from router.config.payloads import read_capture, read_drift, read_redact
from router.config.pod import read_probes, read_shutdown
from router.config.spec import (
    AdminSpec,
    BackendSpec,
    Config,
    ControllerSpec,
    HeadersSpec,
    LimitsSpec,
    ListenSpec,
    LoggingSpec,
    MatchSpec,
    RouteSpec,
    StateSpec,
    StickySpec,
    TLSSpec,
)
from router.core.confkit import ConfigError, Node, show
from router.core.protocols import PROTOCOLS

__all__ = ["ConfigError", "from_document", "load_file", "parse", "validate_file"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9-]{1,63})*$")
HOUR = 3600.0
_LEVELS = ("debug", "info", "warning", "error", "critical")
_STATE_SCHEMES = ("redis", "rediss", "redis+sentinel", "unix")
# defaults come from instances: a slotted dataclass has no class-level defaults
_DEFAULT = Config()
_DEFAULT_BACKEND = BackendSpec(name="", url="", scheme="http", host="", port=80)


def _load_yaml(data: bytes, source: str) -> object:
    try:
        return yamlload.load(data, source)
    except yamlload.YAMLRefused as exc:
        raise ConfigError([str(exc)]) from None


# -- addresses and URLs ----------------------------------------------------
def _valid_host(host: str) -> bool:
    if _HOSTNAME.match(host):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _address(node: Node, path: str, value: object, default_host: str) -> tuple[str, int] | None:
    """`host:port`, `[::1]:8080`, `:8080` (all interfaces) or a bare port (the section's
    default host: loopback for admin). Port 0 asks for an ephemeral port (tests)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535:
        return default_host, value
    text = value if isinstance(value, str) else ""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ok = ":" in host and _valid_host(host)
    else:
        ok = ":" not in host and (host == "" or _valid_host(host))
    if not (sep and ok and port.isdigit() and int(port) <= 65535):
        node.error(path, "must be host:port, [v6-address]:port or :port", value)
        return None
    return host or "0.0.0.0", int(port)


def _url_port(node: Node, path: str, url: SplitResult) -> int | None:
    try:
        port = url.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        node.error(path, "port must be 1..65535", url.geturl())
        return None
    return port or (443 if url.scheme == "https" else 80)


def _backend_url(node: Node, path: str, text: str) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, base_path) of a backend URL, or None after an error."""
    url = urlsplit(text)
    problem = None
    if url.scheme not in ("http", "https"):
        problem = "scheme must be http or https"
    elif not url.hostname:
        problem = "must name a host"
    elif url.query or url.fragment or url.username is not None:
        problem = "must not carry a query, fragment or credentials"
    if problem:
        node.error(path, problem, text)
        return None
    port = _url_port(node, path, url)
    if port is None or url.hostname is None:
        return None
    return url.scheme, url.hostname, port, url.path.rstrip("/")


# -- top-level sections ----------------------------------------------------
def _listen(root: Node) -> ListenSpec:
    """`listen: host:port`, or `{address: host:port, tls: {cert, key}}` for TLS."""
    value = root.raw("listen")
    if value is None:
        return ListenSpec()
    if not isinstance(value, dict):
        addr = _address(root, "listen", value, _DEFAULT.listen.host)
        return ListenSpec(*addr) if addr else ListenSpec()
    node = root.mapping("listen")
    raw = node.raw("address")
    addr = None if raw is None else _address(node, node.sub("address"), raw, _DEFAULT.listen.host)
    tls = None
    if node.has("tls"):
        t = node.mapping("tls")
        cert, key = t.readable_file("cert"), t.readable_file("key")
        for name, value in (("cert", cert), ("key", key)):
            if value is None:
                t.error(t.sub(name), "is required")
        tls = TLSSpec(cert or "", key or "")
        t.done()
    node.done()
    host, port = addr or (_DEFAULT.listen.host, _DEFAULT.listen.port)
    return ListenSpec(host, port, tls)


def _admin(root: Node) -> AdminSpec:
    node = root.mapping("admin")
    value = node.raw("listen")
    addr = None if value is None else _address(node, node.sub("listen"), value, "127.0.0.1")
    token_file = node.readable_file("token_file")
    tokens = read_tokens(node)
    node.done()
    host, port = addr or (_DEFAULT.admin.host, _DEFAULT.admin.port)
    return AdminSpec(host, port, token_file, tokens)


_ANY = ("0.0.0.0", "::", "")


def _apart(root: Node, listen: ListenSpec, admin: AdminSpec) -> None:
    """The data plane and the admin API cannot share a port (port 0: each its own)."""
    overlap = listen.host == admin.host or listen.host in _ANY or admin.host in _ANY
    if listen.port and listen.port == admin.port and overlap:
        where = f"{listen.host}:{listen.port}"
        root.error("admin.listen", f"must not be the data plane's port ({where})", admin.port)


def _state(root: Node) -> StateSpec:
    node = root.mapping("state")
    url = node.opt_string("url")
    if url and urlsplit(url).scheme not in _STATE_SCHEMES:
        node.error(node.sub("url"), f"scheme must be one of {', '.join(_STATE_SCHEMES)}", url)
        url = None
    poll = node.duration("poll_interval", _DEFAULT.state.poll_interval, lo=0.1, hi=600)
    url_file = node.opt_string("url_file")  # read at start: router/config/pod.py
    if url and url_file:
        node.error(node.sub("url_file"), "set url or url_file, not both", url_file)
    node.done()
    return StateSpec(url, poll, url_file)


def _limits(root: Node) -> LimitsSpec:
    node, d = root.mapping("limits"), _DEFAULT.limits
    spec = LimitsSpec(
        max_header_bytes=node.size("max_header_bytes", d.max_header_bytes, hi=1024**2),
        max_body=node.size("max_body", d.max_body),
        header_timeout=node.duration("header_timeout", d.header_timeout, hi=HOUR),
        body_timeout=node.duration("body_timeout", d.body_timeout, hi=HOUR),
        idle_timeout=node.duration("idle_timeout", d.idle_timeout, hi=HOUR),
        drain_timeout=node.duration("drain_timeout", d.drain_timeout, positive=False, hi=HOUR),
    )
    if node.has("max_header_bytes") and spec.max_header_bytes < 1024:
        node.error(node.sub("max_header_bytes"), "must be at least 1KiB", spec.max_header_bytes)
    node.done()
    return spec


def _logging(root: Node) -> LoggingSpec:
    node, d = root.mapping("logging"), _DEFAULT.logging
    spec = LoggingSpec(
        level=node.choice("level", d.level, _LEVELS),
        access_sample=node.number("access_sample", d.access_sample, 0, 1),
        log_bodies=node.boolean("log_bodies", d.log_bodies),
        access_file=node.string("access_file", d.access_file),
    )
    if not spec.access_file.strip() or "\0" in spec.access_file:
        path, value = node.sub("access_file"), spec.access_file
        node.error(path, "must be stderr, stdout or a file path", value)
    node.done()
    return spec


def _headers(root: Node) -> HeadersSpec:
    node = root.mapping("headers")
    request_id = node.header("request_id", _DEFAULT.headers.request_id)
    spec = HeadersSpec(node.boolean("router_backend", True), request_id or "x-request-id")
    node.done()
    return spec


def _controller(root: Node) -> ControllerSpec:
    node, d = root.mapping("controller"), _DEFAULT.controller
    spec = ControllerSpec(
        interval=node.duration("interval", d.interval, lo=0.01, hi=HOUR),
        lease_ttl=node.duration("lease_ttl", d.lease_ttl, lo=0.1, hi=HOUR),
    )
    # a lease shorter than a tick would expire between two renewals
    if spec.lease_ttl <= spec.interval:
        node.error(node.sub("lease_ttl"), "must be longer than controller.interval", spec.lease_ttl)
    node.done()
    return spec


# -- backends --------------------------------------------------------------
def _backend(name: str, node: Node) -> BackendSpec | None:
    url = node.string("url", required=True)
    parts = _backend_url(node, node.sub("url"), url) if url else None
    d = _DEFAULT_BACKEND
    timeout = node.duration("timeout", d.timeout, hi=HOUR)
    connect_timeout = node.duration("connect_timeout", d.connect_timeout, hi=60)
    pool_size = node.integer("pool_size", d.pool_size, 0, 100_000)
    max_connections = node.integer("max_connections", d.max_connections, 1, 100_000)
    queue_timeout = node.duration("queue_timeout", d.queue_timeout, hi=HOUR)
    health = node.opt_string("health")
    if health is not None and not health.startswith("/"):
        node.error(node.sub("health"), "must be a path starting with /", health)
    tls_verify = node.boolean("tls_verify", True)
    ca_file = node.readable_file("ca_file")
    if ca_file and parts and parts[0] != "https":
        node.error(node.sub("ca_file"), "only applies to an https url", ca_file)
    tls = read_backend_tls(node, parts[0] if parts else "")
    node.done()
    if parts is None:
        return None
    scheme, host, port, base = parts
    return BackendSpec(
        name, url, scheme, host, port, base, timeout, connect_timeout, pool_size, health,
        tls_verify, ca_file, max_connections, queue_timeout, tls,
    )  # fmt: skip


def _backends(root: Node) -> tuple[dict[str, BackendSpec], frozenset[str]]:
    """Valid backends by name, and every name written (valid or not)."""
    node = root.mapping("backends", required=True)
    if node.ok and not node.data:
        node.error(node.path, "must define at least one backend")
    out: dict[str, BackendSpec] = {}
    for key in list(node.keys()):
        name = str(key)
        if not _NAME.match(name):
            node.error(node.sub(name), "name must match [A-Za-z0-9_.-]+", name)
        spec = _backend(name, node.mapping(key, required=True))
        if spec is not None:
            out[name] = spec
    return out, frozenset(str(k) for k in node.data)


# -- routes ----------------------------------------------------------------
def _match(route: Node) -> MatchSpec:
    node = route.mapping("match", required=True)
    prefix = node.string("path_prefix", "/")
    if not prefix.startswith("/") or any(c in prefix for c in "?# \t"):
        node.error(node.sub("path_prefix"), "must be a path starting with / (no query)", prefix)
    host = node.opt_string("host")
    if host is not None and not _HOSTNAME.match(host):
        node.error(node.sub("host"), "must be a host name without port", host)
    node.done()
    return MatchSpec(prefix, host.lower() if host else None)


def _sticky(route: Node) -> StickySpec | None:
    if route.raw("sticky") is None:
        return None
    node = route.mapping("sticky")
    header, cookie = node.header("header"), node.opt_string("cookie")
    client_ip = node.boolean("client_ip", False)
    written = node.raw("header") is not None
    if node.ok and written + (cookie is not None) + client_ip != 1:
        node.error(node.path, "must set exactly one of header, cookie, client_ip: true")
    node.done()
    return StickySpec(header, cookie, client_ip)


def _strategy(route: Node, known: frozenset[str]) -> tuple[str, Any] | None:
    from strategies.registry import REGISTRY  # late: strategies import router modules

    node = route.mapping("strategy", required=True)
    words = list(node.keys())
    if node.ok and len(words) != 1:
        node.error(node.path, f"must have exactly one key, one of {', '.join(REGISTRY)}", words)
        return None
    if not words:
        return None
    word = str(words[0])
    kind = REGISTRY.get(word)
    if kind is None:
        node.error(node.sub(word), f"unknown strategy; known: {', '.join(REGISTRY)}")
        node.raw(word)
        return None
    block = node.mapping(word, required=True)
    try:
        spec = kind.parse(block, known)
    except Exception as exc:  # a strategy parser tripping on odd input must not crash a reload
        node.error(block.path, f"could not be read ({type(exc).__name__}: {exc})")
        return None
    block.done()  # in case the strategy forgot; duplicates are dropped at the end
    node.done()
    return word, spec


def _route_node(node: Node, known: frozenset[str]) -> RouteSpec | None:
    name = node.string("name", required=True)
    if name and not _NAME.match(name):
        node.error(node.sub("name"), "must match [A-Za-z0-9_.-]+", name)
    match = _match(node)
    sticky = _sticky(node)
    drift = read_drift(node)
    protocol = node.choice("protocol", "json", tuple(PROTOCOLS))
    capture, redact = read_capture(node), read_redact(node)
    strategy = _strategy(node, known)
    node.done()
    if not node.ok or strategy is None:
        return None
    route = RouteSpec(name, match, *strategy, sticky, drift, protocol, capture, redact)
    node.errors.extend(checks.errors(route, node.data, node.path))  # names fit the protocol?
    return route


def _routes(root: Node, known: frozenset[str]) -> tuple[RouteSpec, ...]:
    items = root.items("routes", required=True)
    if root.has("routes") and isinstance(root.data["routes"], list) and not items:
        root.error("routes", "must list at least one route")
    routes: list[RouteSpec] = []
    names: dict[str, str] = {}
    places: dict[tuple[str | None, str], str] = {}
    for path, item in items:
        if item is None:
            root.error(path, "must be a mapping with name, match and strategy")
            continue
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and (first := names.setdefault(name, path)) != path:
            root.error(f"{path}.name", f"duplicate route name, first used at {first}", name)
        route = _route_node(Node(item, path, root.errors), known)
        if route is None:
            continue
        where = (route.match.host, route.match.path_prefix)
        if (first := places.setdefault(where, path)) != path:
            root.error(f"{path}.match", f"same host and path_prefix as {first}")
        routes.append(route)
    return tuple(routes)


# -- entry points ----------------------------------------------------------
def parse(text: str | bytes, *, source: str = "config.yaml") -> Config:
    """Parse and validate a whole config; raises ConfigError listing every problem."""
    data = text.encode() if isinstance(text, str) else text
    return from_document(_load_yaml(data, source), data, source=source)


def from_document(doc: object, data: bytes, *, source: str = "config.yaml") -> Config:
    """A whole config from its YAML values (`data`, the file's bytes, names the version)."""
    if not isinstance(doc, dict):
        raise ConfigError([f"{source}: must be a YAML mapping of sections, got {show(doc)}"])
    root = Node(doc, "", [])
    sections = (_listen(root), _admin(root), _state(root), _limits(root), _logging(root))
    _apart(root, sections[0], sections[1])
    headers, controller = _headers(root), _controller(root)
    backends, known = _backends(root)
    routes = _routes(root, known)
    shutdown, probes = read_shutdown(root), read_probes(root, _address, *sections[:2])
    root.done()
    if root.errors:
        raise ConfigError(list(dict.fromkeys(root.errors)))
    return Config(
        *sections, headers, controller, MappingProxyType(backends), routes,
        hashlib.sha256(data).hexdigest()[:12], shutdown, probes,
    )  # fmt: skip


def load_file(path: str) -> Config:
    """Read and parse one file; an unreadable file is a ConfigError too."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    return parse(data, source=path)


def validate_file(path: str) -> list[str]:
    """Every problem in the file (empty list: the file is valid). For `routerctl validate`."""
    try:
        load_file(path)
    except ConfigError as exc:
        return exc.errors
    return []
