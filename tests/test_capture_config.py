"""capture:, redact:, admin tokens and backend tls: read with errors at their exact path."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config.reader import parse
from router.core.confkit import ConfigError

BASE = """
backends: {a: {url: http://127.0.0.1:1}}
routes:
  - name: r
    match: {path_prefix: /}
    strategy: {split: {weights: {a: 100}}}
"""


def errors(extra: str, head: str = "") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(head + BASE + extra)
    return info.value.errors


def test_capture_is_off_by_default_and_redaction_ships_its_patterns() -> None:
    """No capture: block, no capture; the shipped patterns apply to samples anyway."""
    route = parse(BASE).routes[0]
    assert route.capture is None
    assert route.redact.patterns == ("email", "card", "phone")
    assert "authorization" not in route.redact.headers


def test_a_capture_block_is_read_whole() -> None:
    """Every key lands in the spec, sizes and durations parsed."""
    route = parse(
        BASE
        + "    capture: {mode: response, sample: 0.05, arms: [shadow], max_body: 8KiB,\n"
        + "              sink: {http: {url: http://127.0.0.1:9/, timeout: 500ms, retries: 1}}}\n"
    ).routes[0]
    spec = route.capture
    assert spec is not None
    assert spec.file is None
    assert spec.http is not None
    assert (spec.mode, spec.sample, spec.arms, spec.max_body) == (
        "response", 0.05, frozenset({"shadow"}), 8192,
    )  # fmt: skip
    assert (spec.http.timeout, spec.http.retries) == (0.5, 1)


def test_bad_capture_values_name_their_exact_path() -> None:
    """Each mistake is reported at once, with its path and the value written."""
    found = errors(
        "    capture: {mode: al, sample: 2, arms: [primery], max_body: 2MiB,\n"
        "              sink: {file: {path: /tmp/x, rotate: 1}}}\n"
    )
    assert "routes[0].capture.mode: must be one of request, response, all, got 'al'" in found
    assert "routes[0].capture.sample: must be a number in 0..1, got 2" in found
    assert any(e.startswith("routes[0].capture.arms[0]: must be one of") for e in found)
    assert "routes[0].capture.max_body: must be at most 1MiB, got '2MiB'" in found
    assert "routes[0].capture.sink.file.rotate: unknown key" in found


def test_a_sink_is_exactly_one_of_file_and_http() -> None:
    """Two sinks, or none, are refused; a non-HTTP URL too."""
    assert "routes[0].capture.sink: must have exactly one of file, http, got []" in errors(
        "    capture: {sink: {}}\n"
    )
    found = errors("    capture: {sink: {http: {url: 'ftp://x'}}}\n")
    assert found == ["routes[0].capture.sink.http.url: must be an http or https URL with a host, "
                     "got 'ftp://x'"]  # fmt: skip


def test_credential_headers_cannot_be_allowed_and_paths_must_parse() -> None:
    """Authorization, cookies and API keys are never written: allowing one is an error."""
    found = errors(
        "    redact: {headers: [Authorization, X-Api-Key, content-type], remove: [user],\n"
        "             hash: ['$.a[', $.ok], patterns: [mail], custom: [{name: x, regex: '('}]}\n"
    )
    assert any(e.startswith("routes[0].redact.headers[0]: carries credentials") for e in found)
    assert any(e.startswith("routes[0].redact.headers[1]: carries credentials") for e in found)
    assert any(e.startswith("routes[0].redact.remove[0]: must be a JSON path") for e in found)
    assert any(e.startswith("routes[0].redact.hash[0]: bad JSON path") for e in found)
    assert any(e.startswith("routes[0].redact.patterns[0]: must be one of email") for e in found)
    assert any(e.startswith("routes[0].redact.custom[0].regex: not a regular") for e in found)
    assert len(found) == 6


def test_patterns_can_be_switched_off() -> None:
    """An empty list turns the shipped patterns off."""
    route = parse(BASE + "    redact: {patterns: []}\n").routes[0]
    assert route.redact.patterns == ()


def test_admin_tokens_need_a_role_a_label_and_one_source(tmp_path: Path) -> None:
    """Roles are viewer or operator; each token comes from a file or an env variable."""
    token = tmp_path / "t"
    token.write_text("s3cret\n")
    head = (
        "admin:\n  tokens:\n"
        f"    - {{label: ci, role: operator, file: {token}}}\n"
        "    - {label: ci, role: boss, env: X}\n"
        f"    - {{label: v, role: viewer, env: X, file: {token}}}\n"
    )
    found = errors("", head)
    assert "admin.tokens[1].role: must be one of viewer, operator, got 'boss'" in found
    assert (
        "admin.tokens[1].label: duplicate label, first used at admin.tokens[0], got 'ci'" in found
    )
    assert "admin.tokens[2]: must set exactly one of file, env" in found
    spec = parse(f"admin:\n  tokens: [{{label: v, role: viewer, file: {token}}}]\n" + BASE)
    assert spec.admin.tokens[0].role == "viewer"


def test_backend_tls_wants_cert_and_key_together_and_https(tmp_path: Path) -> None:
    """A client certificate without its key (or on http) is refused at its path."""
    pem = tmp_path / "c.pem"
    pem.write_text("x")
    text = BASE.replace(
        "a: {url: http://127.0.0.1:1}", f"a: {{url: http://127.0.0.1:1, tls: {{cert: {pem}}}}}"
    )
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert "backends.a.tls.key: is required with cert" in info.value.errors
    assert "backends.a.tls: only applies to an https url, got 'http'" in info.value.errors
