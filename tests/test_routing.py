"""The route table: which route a request matches, and the key and state it decides with."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from router.config.reader import parse
from router.config.spec import MatchSpec, RouteSpec, StickySpec
from router.core.rollout import Rollout
from router.dataplane.hashing import key_of
from router.dataplane.routing import CompiledRoute, RouteTable, build_table
from strategies.base import EVERY_COPY, Decision
from strategies.split import SplitSpec

CONFIG = """
backends:
  a: {url: http://127.0.0.1:8101}
  b: {url: http://127.0.0.1:8102}
routes:
  - {name: root, match: {path_prefix: /}, strategy: {split: {weights: {a: 100}}}}
  - {name: v2, match: {path_prefix: /v2}, strategy: {split: {weights: {a: 100}}}}
  - {name: iris, match: {path_prefix: /v2/models/iris}, strategy: {split: {weights: {a: 100}}}}
  - {name: api, match: {path_prefix: /api/}, strategy: {split: {weights: {a: 100}}}}
  - name: v2-internal
    match: {path_prefix: /v2, host: Internal.Example.com}
    strategy: {split: {weights: {b: 100}, override_header: X-Backend}}
"""
TABLE = build_table(parse(CONFIG))


def matched(path: bytes, host: bytes | None = None) -> str | None:
    route = TABLE.match(host, path)
    return route.name if route else None


class KeyEcho:
    """A strategy that answers with the key and live state it was given."""

    override_header: bytes | None = None
    copies = EVERY_COPY

    def backends(self) -> tuple[str, ...]:
        return ("a",)

    def decide(self, key: int, live: Rollout | None, override: bytes | None) -> Decision:
        return Decision(live.candidate if live else "none", str(key))


def echo_route(sticky: StickySpec | None, name: str = "r") -> CompiledRoute:
    spec = RouteSpec(name, MatchSpec("/"), "split", SplitSpec((("a", 10_000),)), sticky)
    return CompiledRoute(spec, KeyEcho())


def test_longest_prefix_wins() -> None:
    """The most specific prefix matches, whatever the order routes were written in."""
    assert matched(b"/v2/models/iris/infer") == "iris"
    assert matched(b"/v2/models/other/infer") == "v2"
    assert matched(b"/health") == "root"


def test_prefix_matches_on_segment_boundaries() -> None:
    """/v2 matches /v2, /v2/x and /v2:verb but not /v2x; a prefix ending in / matches below."""
    assert matched(b"/v2") == "v2"
    assert matched(b"/v2/") == "v2"
    assert matched(b"/v2x") == "root"
    assert matched(b"/v2/models/irises") == "v2"
    assert matched(b"/v2:predict") == "v2"  # TF Serving's /v1/models/NAME:predict
    assert matched(b"/api/x") == "api"
    assert matched(b"/api") == "root"  # "/api/" asks for the slash


def test_query_string_is_ignored_when_matching() -> None:
    """A query string right after the prefix still matches that prefix."""
    assert matched(b"/v2/models/iris?verbose=1") == "iris"
    assert matched(b"/v2?x=/v2/models/iris") == "v2"


def test_host_route_beats_same_prefix_and_ignores_port_and_case() -> None:
    """A route bound to a Host wins for that host (any port, any case) and only for it."""
    assert matched(b"/v2/x", b"internal.example.com") == "v2-internal"
    assert matched(b"/v2/x", b"INTERNAL.example.COM:8080") == "v2-internal"
    assert matched(b"/v2/x", b"other.example.com") == "v2"
    assert matched(b"/v2/x", None) == "v2"
    assert matched(b"/v2/x", b"[::1]:8080") == "v2"


def test_no_route_matches_when_there_is_no_catch_all() -> None:
    """Without a / route, an unmatched path gives None (the server answers 404)."""
    table = RouteTable([r for r in TABLE.routes if r.name != "root"])
    assert table.match(None, b"/health") is None


def test_sticky_by_header_gives_the_hash_of_its_value() -> None:
    """The sticky header's value (header names compared lower case) is the key."""
    route = echo_route(StickySpec(header="x-user-id"))
    d = route.decide([(b"host", b"h"), (b"x-user-id", b"user-7")], "10.0.0.1", {})
    assert d.reason == str(key_of(b"user-7"))


def test_sticky_by_cookie_among_several() -> None:
    """The named cookie is found among others, quotes stripped."""
    route = echo_route(StickySpec(cookie="uid"))
    headers = [(b"cookie", b'a=1; uid="u-42"; b=2')]
    assert route.decide(headers, "10.0.0.1", {}).reason == str(key_of(b"u-42"))


def test_sticky_by_client_ip() -> None:
    """client_ip stickiness hashes the client's address."""
    route = echo_route(StickySpec(client_ip=True))
    assert route.decide([], "10.0.0.1", {}).reason == str(key_of(b"10.0.0.1"))


def test_missing_sticky_identity_gives_random_keys() -> None:
    """Without the sticky header the key is random, so such requests spread out."""
    route = echo_route(StickySpec(header="x-user-id"))
    keys = {route.decide([(b"x-other", b"1")], "10.0.0.1", {}).reason for _ in range(20)}
    assert len(keys) > 1


def test_decide_uses_the_live_state_of_its_own_route() -> None:
    """decide passes the strategy the snapshot entry for its route, not another's."""
    route = echo_route(None, name="iris")
    live = {"iris": Rollout("iris", candidate="v2"), "other": Rollout("other", candidate="x")}
    assert route.decide([], "", live).primary == "v2"
    assert route.decide([], "", {"other": live["other"]}).primary == "none"


def test_override_header_reaches_the_strategy() -> None:
    """A route whose strategy declares an override header passes that header's value."""
    route = TABLE.by_name["v2-internal"]
    assert route.decide([(b"x-backend", b"b")], "", {}).reason == "override"
    assert route.decide([], "", {}).reason == "split"


# -- the index equals the rule it replaced (a scan in longest-prefix order) ------------
def scan(routes: list[tuple[str, str | None]], host: str | None, path: str) -> int | None:
    """The reference: index of the first route, longest prefix first, host before none,
    whose host fits and whose prefix matches `path` on a segment boundary."""
    order = sorted(range(len(routes)), key=lambda i: (len(routes[i][0]), routes[i][1] is not None))
    for i in reversed(order):
        prefix, want = routes[i]
        if want is not None and want != host:
            continue
        if path.startswith(prefix) and (
            len(path) == len(prefix) or prefix.endswith("/") or path[len(prefix)] in "/:"
        ):
            return i
    return None


SEGMENTS = st.sampled_from(["a", "b", "ab", "v2", "", "a:p", ":"])
PATHS = st.lists(SEGMENTS, min_size=0, max_size=4).map(lambda s: "/" + "/".join(s))
HOSTS = st.sampled_from([None, "x.example", "y.example"])


@given(
    routes=st.lists(st.tuples(PATHS, HOSTS), min_size=1, max_size=12, unique=True),
    host=HOSTS,
    path=PATHS,
    query=st.sampled_from(["", "?q=1", "?a/b"]),
)
def test_the_index_picks_what_a_scan_in_match_order_picks(
    routes: list[tuple[str, str | None]], host: str | None, path: str, query: str
) -> None:
    specs = [
        RouteSpec(f"r{i}", MatchSpec(p, h), "split", SplitSpec((("a", 10_000),)))
        for i, (p, h) in enumerate(routes)
    ]
    table = RouteTable([CompiledRoute(s, KeyEcho()) for s in specs])
    found = table.match(host.encode() if host else None, (path + query).encode())
    expected = scan(routes, host, path)
    assert (found.name if found else None) == (None if expected is None else f"r{expected}")


def test_ten_thousand_routes_match_by_lookup() -> None:
    """The last of 10,000 routes is found whatever the query; an unknown one is not
    (what it costs is `make bench`'s "scale" section)."""
    specs = [
        RouteSpec(f"m{i}", MatchSpec(f"/models/m{i}"), "split", SplitSpec((("a", 10_000),)))
        for i in range(10_000)
    ]
    table = RouteTable([CompiledRoute(s, KeyEcho()) for s in specs])
    for n in range(100):
        route = table.match(None, f"/models/m9999/infer?id={n}".encode())
        assert route is not None
        assert route.name == "m9999"
    assert table.match(None, b"/models/m10000/infer") is None
