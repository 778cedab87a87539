"""The routing table: request -> route -> decision, all pure and precompiled.

Built once per config load (hot reload builds a new table and swaps one
reference). `match` picks the route with the longest path prefix, on segment
boundaries (`/iris` matches `/iris` and `/iris/predict`, not `/irises`); a
route with a `host` beats one without for the same prefix. `decide` hashes the
route's sticky identity into a key and asks the strategy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from router.config.spec import Config, RouteSpec
from router.core.rollout import Rollout
from router.dataplane.hashing import key_of, random_key
from strategies.base import Decision, Strategy

Headers = Sequence[tuple[bytes, bytes]]  # names lower case, as received


def header_value(headers: Headers, name: bytes) -> bytes | None:
    """The first value of a header (name lower case), or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


def cookie_value(headers: Headers, name: bytes) -> bytes | None:
    """The value of one cookie from the Cookie header(s), or None."""
    for key, value in headers:
        if key != b"cookie":
            continue
        for part in value.split(b";"):
            k, sep, v = part.strip().partition(b"=")
            if sep and k == name:
                return v.strip(b'"')
    return None


class CompiledRoute:
    """One route ready to decide: its strategy built, its sticky key compiled."""

    __slots__ = ("_client_ip", "_cookie", "_header", "_override", "name", "spec", "strategy")

    def __init__(self, spec: RouteSpec, strategy: Strategy) -> None:
        self.name = spec.name
        self.spec = spec
        self.strategy = strategy
        sticky = spec.sticky
        self._header = sticky.header.lower().encode() if sticky and sticky.header else None
        self._cookie = sticky.cookie.encode() if sticky and sticky.cookie else None
        self._client_ip = bool(sticky and sticky.client_ip)
        self._override = strategy.override_header

    def key(self, headers: Headers, client_ip: str) -> int:
        """The request's sticky key: header, then cookie, then address, else random."""
        if self._header is not None and (v := header_value(headers, self._header)):
            return key_of(v)
        if self._cookie is not None and (v := cookie_value(headers, self._cookie)):
            return key_of(v)
        if self._client_ip and client_ip:
            return key_of(client_ip.encode())
        return random_key()

    def decide(self, headers: Headers, client_ip: str, live: Mapping[str, Rollout]) -> Decision:
        override = header_value(headers, self._override) if self._override else None
        return self.strategy.decide(self.key(headers, client_ip), live.get(self.name), override)


def candidate_prefixes(path: str) -> list[str]:
    """Every path_prefix that matches `path` (no query), longest first.

    A prefix matches on segment boundaries: the whole path, the path up to a
    `/` (without it, `/iris` for `/iris/predict`) or through it (`/iris/`), and
    the path up to a `:` (TF Serving calls NAME:predict under a route for
    /v1/models/NAME). So the candidates are a few per segment, whatever the
    number of routes: matching is a few dict lookups, not a scan."""
    out = [path]
    for i in range(len(path) - 1, -1, -1):
        c = path[i]
        if c == "/":
            through = path[: i + 1]
            if through != out[-1]:
                out.append(through)
            if i > 0:
                out.append(path[:i])
        elif c == ":" and i > 0:
            out.append(path[:i])
    return out


class RouteTable:
    """Routes by host and path prefix; `match` costs the same for 1 or 10,000 routes.

    The longest prefix wins; for the same prefix a route naming the request's
    host beats one without (config refuses two routes with the same host and
    prefix, so the order of routes in the file never decides)."""

    def __init__(self, routes: Sequence[CompiledRoute]) -> None:
        order = sorted(
            routes,
            key=lambda r: (len(r.spec.match.path_prefix), r.spec.match.host is not None),
            reverse=True,
        )
        self.routes: tuple[CompiledRoute, ...] = tuple(order)  # match order, for reading
        self.by_name: dict[str, CompiledRoute] = {r.name: r for r in routes}
        self._any_host: dict[str, CompiledRoute] = {}
        self._by_host: dict[str, dict[str, CompiledRoute]] = {}
        for route in reversed(order):  # the first in match order wins a (host, prefix) tie
            m = route.spec.match
            index = self._any_host if m.host is None else self._by_host.setdefault(m.host, {})
            index[m.path_prefix] = route

    def match(self, host: bytes | None, path: bytes) -> CompiledRoute | None:
        """The route for a request; `path` is the target, its query ignored."""
        text = path.decode("latin-1").split("?", 1)[0]
        hostname = _hostname(host)
        named = self._by_host.get(hostname) if hostname is not None else None
        for prefix in candidate_prefixes(text):
            if named is not None and (route := named.get(prefix)) is not None:
                return route
            if (route := self._any_host.get(prefix)) is not None:
                return route
        return None


def _hostname(host: bytes | None) -> str | None:
    if not host:
        return None
    text = host.decode("latin-1").lower()
    if text.startswith("["):  # [::1]:8080
        return text.split("]", 1)[0] + "]"
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def build_table(config: Config) -> RouteTable:
    """Build every route's strategy from its validated spec."""
    from strategies.registry import REGISTRY

    compiled = [
        CompiledRoute(r, REGISTRY[r.strategy_kind].build(r.strategy)) for r in config.routes
    ]
    return RouteTable(compiled)
