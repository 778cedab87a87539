"""config.yaml parsing: the values it builds and the exact errors it reports."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from router.config.reader import ConfigError, load_file, parse, validate_file
from router.config.spec import StickySpec, TLSSpec
from router.core.confkit import Node
from strategies.base import StrategyKind, StrategySpec
from strategies.registry import REGISTRY
from strategies.split import SPLIT, SplitSpec

BACKENDS = """
backends:
  a: {url: http://127.0.0.1:8101}
  b: {url: http://127.0.0.1:8102}
"""
ROUTE = """
routes:
  - name: r
    match: {path_prefix: /r}
    strategy: {split: {weights: {a: 90, b: 10}}}
"""


def route(name: str, prefix: str, weights: str = "{a: 100}") -> str:
    """One more list item for `routes:`."""
    strategy = f"{{split: {{weights: {weights}}}}}"
    return f"  - {{name: {name}, match: {{path_prefix: {prefix}}}, strategy: {strategy}}}\n"


def doc(text: str = "", *, backends: str = BACKENDS, routes: str = ROUTE) -> str:
    return textwrap.dedent(text) + backends + routes


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.errors


def test_minimal_config_gets_defaults_and_hash() -> None:
    """A file with only backends and routes parses, with defaults and a 12-digit source hash."""
    text = doc()
    config = parse(text)
    assert config.listen.host == "0.0.0.0"
    assert config.listen.port == 8080
    assert config.admin.port == 9901
    assert config.state.url is None
    assert config.limits.max_body == 10 * 1024 * 1024
    assert config.source_hash == hashlib.sha256(text.encode()).hexdigest()[:12]
    route = config.routes[0]
    assert (route.name, route.match.path_prefix, route.strategy_kind) == ("r", "/r", "split")
    assert route.strategy == SplitSpec((("a", 9000), ("b", 1000)))
    assert route.sticky is None


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Certificate, key and token files that exist, in the working directory."""
    monkeypatch.chdir(tmp_path)
    for name in ("c.pem", "k.pem", "c", "k", "token"):
        (tmp_path / name).write_text("x")
    return tmp_path


@pytest.mark.usefixtures("files")
def test_every_section_is_read() -> None:
    """Durations, sizes, addresses and flags in every top-level section reach the Config."""
    config = parse(
        doc("""
        listen: {address: "[::1]:8443", tls: {cert: c.pem, key: k.pem}}
        admin: {listen: "127.0.0.1:0", token_file: token}
        state: {url: "redis+sentinel://h:26379/mymaster", poll_interval: 250ms}
        limits: {max_body: 1MiB, max_header_bytes: 8KiB, header_timeout: 5s, idle_timeout: 2m}
        logging: {level: debug, access_sample: 0.25, log_bodies: true, access_file: /var/a.log}
        headers: {router_backend: false, request_id: X-Trace-Id}
        controller: {interval: 500ms, lease_ttl: 3s}
        """)
    )
    assert (config.listen.host, config.listen.port) == ("::1", 8443)
    assert config.listen.tls == TLSSpec("c.pem", "k.pem")
    assert (config.admin.host, config.admin.port, config.admin.token_file) == (
        "127.0.0.1",
        0,
        "token",
    )
    assert config.state.poll_interval == 0.25
    assert config.limits.max_body == 1024 * 1024
    assert config.limits.max_header_bytes == 8192
    assert config.limits.idle_timeout == 120.0
    assert (config.logging.access_sample, config.logging.access_file) == (0.25, "/var/a.log")
    assert config.headers.request_id == "x-trace-id"
    assert not config.headers.router_backend
    assert (config.controller.interval, config.controller.lease_ttl) == (0.5, 3.0)


def test_access_log_defaults_to_every_request_on_stderr() -> None:
    """With no logging section the access log is on: every request, on stderr."""
    config = parse(doc())
    assert (config.logging.access_sample, config.logging.access_file) == (1.0, "stderr")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('""', "logging.access_file: must be a non-empty string, got ''"),
        ('"  "', "logging.access_file: must be stderr, stdout or a file path, got '  '"),
        ("[a]", "logging.access_file: must be a non-empty string, got"),
    ],
)
def test_access_file_errors_name_the_path(value: str, expected: str) -> None:
    """A blank or non-string access_file is refused with its path and value."""
    [error] = errors_of(doc(f"logging: {{access_file: {value}}}\n"))
    assert error.startswith(expected)


@pytest.mark.usefixtures("files")
def test_listen_forms() -> None:
    """A bare port takes the section's default host: all interfaces, loopback for admin."""
    config = parse(doc("listen: 8081\nadmin: {listen: 0}\n"))
    assert (config.listen.host, config.listen.port) == ("0.0.0.0", 8081)
    assert (config.admin.host, config.admin.port) == ("127.0.0.1", 0)
    config = parse(doc("listen: {tls: {cert: c, key: k}}\nadmin: {listen: ':9000'}\n"))
    assert (config.listen.port, config.listen.tls) == (8080, TLSSpec("c", "k"))
    assert (config.admin.host, config.admin.port) == ("0.0.0.0", 9000)
    assert errors_of(doc("listen: '[::1:80'\n")) == [
        "listen: must be host:port, [v6-address]:port or :port, got '[::1:80'"
    ]


def test_backend_url_parts_and_defaults() -> None:
    """A backend URL is split into scheme, host, default port and base path."""
    config = parse(
        doc(
            backends="""
backends:
  a: {url: "https://models.internal/v1/", timeout: 250ms, pool_size: 8, health: /ready}
  b: {url: "http://[::1]:9000", tls_verify: false}
"""
        )
    )
    a, b = config.backends["a"], config.backends["b"]
    assert (a.scheme, a.host, a.port, a.base_path) == ("https", "models.internal", 443, "/v1")
    assert (a.timeout, a.pool_size, a.health) == (0.25, 8, "/ready")
    assert (b.scheme, b.host, b.port, b.base_path, b.tls_verify) == ("http", "::1", 9000, "", False)


def test_sticky_and_host_match() -> None:
    """sticky and match.host are read and lower-cased where names are case-insensitive."""
    config = parse(
        doc(
            routes="""
routes:
  - name: r
    match: {path_prefix: /r, host: API.Example.com}
    sticky: {header: X-User-Id}
    strategy: {split: {weights: {a: 100}}}
  - name: s
    match: {path_prefix: /s}
    sticky: {client_ip: true}
    strategy: {split: {weights: {b: 100}}}
"""
        )
    )
    r, s = config.routes
    assert r.match.host == "api.example.com"
    assert r.sticky == StickySpec(header="x-user-id")
    assert s.sticky == StickySpec(client_ip=True)


def test_all_errors_reported_at_once_with_paths() -> None:
    """One bad file yields every problem, each naming its path and the value written."""
    errors = errors_of(
        doc(
            """
            listen: 0.0.0.0:99999
            admin: {listen: localhost, tokn: x}
            state: {url: "http://x"}
            limits: {max_body: lots}
            logging: {level: loud}
            """,
            backends="""
backends:
  a: {url: http://127.0.0.1:8101, timeout: 5x}
  b: {url: "ftp://x"}
  c d: {url: "http://h:0/x"}
""",
            routes="""
routes:
  - name: r
    match: {path_prefix: predict}
    sticky: {header: X, cookie: y}
    strategy: {split: {weights: {a: 140, zz: 10}}}
""",
        )
    )
    assert errors == [
        "listen: must be host:port, [v6-address]:port or :port, got '0.0.0.0:99999'",
        "admin.listen: must be host:port, [v6-address]:port or :port, got 'localhost'",
        "admin.tokn: unknown key",
        "state.url: scheme must be one of redis, rediss, redis+sentinel, unix, got 'http://x'",
        "limits.max_body: must be a size like 512, 64KiB or 10MiB, got 'lots'",
        "logging.level: must be one of debug, info, warning, error, critical, got 'loud'",
        "backends.a.timeout: must be a duration like 500ms, 30s, 5m or 1h, got '5x'",
        "backends.b.url: scheme must be http or https, got 'ftp://x'",
        "backends.c d: name must match [A-Za-z0-9_.-]+, got 'c d'",
        "backends.c d.url: port must be 1..65535, got 'http://h:0/x'",
        "routes[0].match.path_prefix: must be a path starting with / (no query), got 'predict'",
        "routes[0].sticky: must set exactly one of header, cookie, client_ip: true",
        "routes[0].strategy.split.weights.a: must be 0..100, got 140",
        "routes[0].strategy.split.weights.zz: is not a backend defined under backends, got 'zz'",
    ]


def test_weight_error_in_second_route_names_its_index() -> None:
    """The design's example error: routes[1]...weights.b: must be 0..100, got 140."""
    second = route("q", "/q", "{a: 90, b: 140}")
    assert errors_of(doc(routes=ROUTE + second)) == [
        "routes[1].strategy.split.weights.b: must be 0..100, got 140"
    ]


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        ("routes: []", "routes: must list at least one route"),
        ("", "routes: is required"),
        (
            ROUTE + route("r", "/x"),
            "routes[1].name: duplicate route name, first used at routes[0], got 'r'",
        ),
        (
            ROUTE + route("q", "/r"),
            "routes[1].match: same host and path_prefix as routes[0]",
        ),
        (
            ROUTE.replace("{split: {weights: {a: 90, b: 10}}}", "{canry: {}}"),
            "routes[0].strategy.canry: unknown strategy; known: ",
        ),
        (
            ROUTE.replace("{split: {weights: {a: 90, b: 10}}}", "{}"),
            "routes[0].strategy: must have exactly one key, one of ",
        ),
        (ROUTE.replace("name: r", "name: r/x"), "routes[0].name: must match [A-Za-z0-9_.-]+"),
        (ROUTE.replace("    match: {path_prefix: /r}\n", ""), "routes[0].match: is required"),
        (ROUTE.replace("/r}", "/r, hots: x}"), "routes[0].match.hots: unknown key"),
        (ROUTE + "    sticky: {client_ip: false}", "routes[0].sticky: must set exactly one of"),
    ],
)
def test_route_errors(routes: str, expected: str) -> None:
    """Each route-level mistake is reported with the route's index."""
    errors = errors_of(doc(routes=routes))
    assert any(e.startswith(expected) for e in errors), errors


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://", "must name a host"),
        ("127.0.0.1:8101", "scheme must be http or https"),
        ("http://h:70000", "port must be 1..65535"),
        ("http://h:8101/?x=1", "must not carry a query, fragment or credentials"),
    ],
)
def test_bad_backend_urls(url: str, expected: str) -> None:
    """A backend URL needs an http(s) scheme, a host, a valid port and no query."""
    errors = errors_of(doc(backends=f"backends:\n  a: {{url: '{url}'}}\n  b: {{url: http://h}}"))
    assert errors == [f"backends.a.url: {expected}, got '{url}'"]


def test_undefined_backend_reported_once_even_if_another_backend_is_broken() -> None:
    """A backend with a bad field still counts as defined: no cascade into the routes."""
    errors = errors_of(doc(backends="backends:\n  a: {url: 'ftp://x'}\n  b: {url: http://h}\n"))
    assert errors == ["backends.a.url: scheme must be http or https, got 'ftp://x'"]


def test_unknown_top_level_key_and_duplicate_yaml_key() -> None:
    """A typo'd section is an unknown key; a key written twice is refused by the YAML reader."""
    assert errors_of(doc("limit: {}\n")) == ["limit: unknown key"]
    dup = doc(backends=BACKENDS + "  a: {url: http://h}\n")
    [message] = errors_of(dup)
    assert message.startswith("config.yaml:5:3: invalid YAML: duplicate key 'a'")


def test_yaml_syntax_error_names_line_and_file() -> None:
    """Broken YAML names the source file, line and column."""
    with pytest.raises(ConfigError) as info:
        parse("routes: [\n", source="/etc/router.yaml")
    assert info.value.errors[0].startswith("/etc/router.yaml:2:1: invalid YAML:")


def test_not_a_mapping() -> None:
    """An empty file or a list at the top level is refused."""
    assert errors_of("") == ["config.yaml: must be a YAML mapping of sections, got None"]
    assert errors_of("- a\n")[0].startswith("config.yaml: must be a YAML mapping")


@pytest.mark.parametrize(
    ("value", "shown"),
    [(".inf", "inf"), (".nan", "nan"), ("-1", "-1"), ("true", "True"), ("1d", "'1d'")],
)
def test_bad_durations(value: str, shown: str) -> None:
    """Infinite, negative, boolean or unknown-unit durations are refused."""
    expected = "limits.idle_timeout: must be a duration like 500ms, 30s, 5m or 1h, got "
    assert errors_of(doc(f"limits: {{idle_timeout: {value}}}\n")) == [expected + shown]


def test_lease_must_outlive_the_controller_tick() -> None:
    """A leader lease shorter than the controller interval would lapse between renewals."""
    errors = errors_of(doc("controller: {interval: 5s, lease_ttl: 2s}\n"))
    assert errors == ["controller.lease_ttl: must be longer than controller.interval, got 2.0"]


def test_load_file_and_validate_file(tmp_path: Path) -> None:
    """load_file reads a real file; validate_file lists errors, or nothing for a good file."""
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(doc())
    bad.write_text(doc("logging: {level: loud}\n"))
    assert load_file(str(good)).routes[0].name == "r"
    assert validate_file(str(good)) == []
    assert validate_file(str(bad)) == [
        "logging.level: must be one of debug, info, warning, error, critical, got 'loud'"
    ]
    missing = str(tmp_path / "none.yaml")
    assert validate_file(missing) == [f"{missing}: cannot read: No such file or directory"]


def test_repository_example_config_is_valid() -> None:
    """The config.yaml shipped at the repository root passes validation."""
    root = Path(__file__).resolve().parent.parent
    assert validate_file(str(root / "config.yaml")) == []


def _broken_parse(node: Node, known: frozenset[str]) -> StrategySpec:
    raise ValueError("cannot handle this")


def test_a_crashing_strategy_parser_becomes_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A strategy parser that raises is reported at its block's path, not as a crash."""
    monkeypatch.setitem(REGISTRY, "broken", StrategyKind("broken", _broken_parse, SPLIT.build))
    errors = errors_of(
        doc(routes=ROUTE.replace("{split: {weights: {a: 90, b: 10}}}", "{broken: {}}"))
    )
    assert errors == [
        "routes[0].strategy.broken: could not be read (ValueError: cannot handle this)"
    ]
