"""The `shutdown:` and `probes:` sections: defaults, values, errors with their path."""

from __future__ import annotations

import pytest

from router.config.reader import ConfigError, parse

BASE = (
    "backends: {a: {url: 'http://127.0.0.1:9'}}\n"
    "routes: [{name: r, match: {path_prefix: /}, strategy: {split: {weights: {a: 100}}}}]\n"
)


def errors(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(BASE + extra)
    return info.value.errors


def test_defaults_a_delay_of_a_few_seconds_and_no_probes_listener() -> None:
    config = parse(BASE)
    assert config.shutdown.delay == 5.0
    assert config.probes is None


def test_values_are_read() -> None:
    config = parse(BASE + "shutdown: {delay: 2s}\nprobes: {listen: 0.0.0.0:9902, metrics: false}\n")
    assert config.shutdown.delay == 2.0
    assert config.probes is not None
    assert (config.probes.host, config.probes.port, config.probes.metrics) == (
        "0.0.0.0",
        9902,
        False,
    )
    assert parse(BASE + "shutdown: {delay: 0s}\n").shutdown.delay == 0.0
    assert parse(BASE + "probes: {}\n").probes is not None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("shutdown: {delay: soon}\n", "shutdown.delay: must be a duration"),
        ("shutdown: {delay: 11m}\n", "shutdown.delay: must be at most 10m, got '11m'"),
        ("shutdown: {dealy: 2s}\n", "shutdown.dealy: unknown key"),
        ("probes: {listen: nowhere}\n", "probes.listen: must be host:port"),
        ("probes: {listen: ':8080'}\n", "probes.listen: same port as listen, got ':8080'"),
        ("probes: {listen: '127.0.0.1:9901'}\n", "probes.listen: same port as admin.listen"),
        ("probes: {metrics: 1}\n", "probes.metrics: must be true or false, got 1"),
    ],
)
def test_errors_name_the_path_and_value(extra: str, message: str) -> None:
    found = errors(extra)
    assert any(e.startswith(message) for e in found), found
