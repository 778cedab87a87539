"""Hostile and impossible configs are refused with their path, cheaply.

A hot-reloaded file is an input: an alias bomb, a 10,000-deep list or a value
that cannot work must come back as one precise error, never a stall, a
traceback or a config that fails later while serving.
"""

from __future__ import annotations

import resource
import textwrap
import time

import pytest

from router.config.reader import ConfigError, parse
from router.config.yamlload import MAX_BYTES, MAX_DEPTH, MAX_VALUES

BASE = """
backends: {b1: {url: "http://127.0.0.1:9001"}}
routes:
  - {name: r, match: {path_prefix: /}, strategy: {split: {weights: {b1: 100}}}}
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(textwrap.dedent(text))
    return info.value.errors


def alias_bomb(levels: int = 9) -> str:
    """Nine anchors of nine aliases each: 9**9 (387 million) values in 1 KB."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\nlisten: *l{levels - 1}\n" + BASE


def test_an_alias_bomb_is_refused_at_once_without_growing() -> None:
    """Refused naming the cap, in well under a second, with no memory to speak of."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.process_time()
    errors = errors_of(alias_bomb())
    took = time.process_time() - started
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"\nalias bomb refused in {took * 1000:.1f} ms CPU, max RSS +{grown_mb:.1f} MB")
    assert len(errors) == 1
    assert f"holds more than {MAX_VALUES:,} values" in errors[0]
    assert errors[0].startswith("config.yaml:")
    assert grown_mb < 50


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[" * 10_000 + "]" * 10_000, "invalid YAML: exceeded maximum nesting depth"),
        ("x: " + "[" * 200 + "]" * 200, f"nested deeper than {MAX_DEPTH} levels"),
        (
            "x:\n" + "".join("  " * i + "y:\n" for i in range(1, 1100)),
            f"nested deeper than {MAX_DEPTH}",
        ),
        ("x: &a [1, *a]\n", "a YAML alias refers to itself"),
    ],
    ids=["deep-list", "deep-flow", "deep-map", "recursive"],
)
def test_deep_and_recursive_documents_get_one_error(text: str, expected: str) -> None:
    """No RecursionError traceback: one line naming the place."""
    errors = errors_of(text)
    assert len(errors) == 1
    assert expected in errors[0]


def test_a_file_over_the_size_cap_is_not_parsed() -> None:
    errors = errors_of("#" * (MAX_BYTES + 1))
    assert errors == [f"config.yaml: {MAX_BYTES + 1:,} bytes, more than the {MAX_BYTES:,} allowed"]


def test_a_huge_value_is_shown_short() -> None:
    """An error quoting a value shows a bounded prefix of it."""
    errors = errors_of("listen: [" + ",".join(["1"] * 100_000) + "]\n" + BASE)
    assert errors == [
        "listen: must be host:port, [v6-address]:port or :port, got [1, 1, 1, 1, 1, 1, ...]"
    ]


MISTAKES = [
    (
        "listen: 127.0.0.1:7000\nadmin: {listen: 127.0.0.1:7000}",
        "admin.listen: must not be the data plane's port (127.0.0.1:7000), got 7000",
    ),
    (
        "listen: 0.0.0.0:7000\nadmin: {listen: 127.0.0.1:7000}",
        "admin.listen: must not be the data plane's port (0.0.0.0:7000), got 7000",
    ),
    (
        "listen: {address: ':8443', tls: {cert: /nonexistent/c.pem, key: /nonexistent/k.pem}}",
        "listen.tls.cert: cannot read file: No such file or directory, got '/nonexistent/c.pem'",
    ),
    ("listen: {address: ':8443', tls: {cert: /nonexistent/c.pem}}", "listen.tls.key: is required"),
    (
        "admin: {token_file: /nonexistent/token}",
        "admin.token_file: cannot read file: No such file or directory, got '/nonexistent/token'",
    ),
    (
        "headers: {request_id: Host}",
        "headers.request_id: must not be a header that frames or routes the message",
    ),
    (
        "headers: {request_id: Content-Length}",
        "headers.request_id: must not be a header that frames or routes the message",
    ),
    (
        "limits: {max_body: 1000000000000000000000000000000}",
        "limits.max_body: must be at most 1GiB",
    ),
    ("limits: {header_timeout: 1.0e+308}", "limits.header_timeout: must be 1ms..1h, got 1e+308"),
    (
        "backends: {b1: {url: 'http://127.0.0.1:9001', connect_timeout: 0.000000001}}",
        "backends.b1.connect_timeout: must be 1ms..1m, got 1e-09",
    ),
    ("controller: {interval: 1ms}", "controller.interval: must be 10ms..1h, got '1ms'"),
    ("state: {poll_interval: 10ms}", "state.poll_interval: must be 100ms..10m, got '10ms'"),
]


@pytest.mark.parametrize(("section", "expected"), MISTAKES)
def test_settings_that_cannot_work_are_refused_with_their_path(section: str, expected: str) -> None:
    """Each was accepted before and failed only once the router ran."""
    text = BASE + section + "\n"
    if section.startswith("backends:"):
        text = text.replace('backends: {b1: {url: "http://127.0.0.1:9001"}}\n', "")
    errors = errors_of(text)
    assert any(e.startswith(expected) for e in errors), errors


@pytest.mark.parametrize(
    ("where", "block"),
    [
        ("routes[0].sticky.header", "sticky: {header: Content-Length}"),
        ("routes[0].strategy.split.override_header", None),
    ],
)
def test_route_headers_cannot_be_framing_headers(where: str, block: str | None) -> None:
    route = "  - {name: r, match: {path_prefix: /}, strategy: {split: {weights: {b1: 100}"
    if block is None:
        route += ", override_header: Transfer-Encoding}}}"
    else:
        route += "}}, " + block + "}"
    text = 'backends: {b1: {url: "http://127.0.0.1:9001"}}\nroutes:\n' + route + "\n"
    errors = errors_of(text)
    assert any(e.startswith(f"{where}: must not be a header") for e in errors), errors
