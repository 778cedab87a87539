"""Redaction, the pure part: headers by allow-list, JSON paths, patterns, failing closed."""

from __future__ import annotations

from typing import Any

import pytest

from router.capture.writer import Capture
from router.config.reader import parse
from router.core.redact import RedactionError, Redactor, secret_header
from router.dataplane.routing import build_table
from router.runtime import Runtime

ALL = ("email", "card", "phone")


def test_credentials_are_never_kept_whatever_the_allow_list() -> None:
    """Authorization, cookies, API keys and token-like names never pass; others only if listed."""
    red = Redactor(["content-type", "authorization", "x-api-key", "x-trace"])
    kept = red.headers([
        (b"Authorization", b"Bearer s"), (b"X-Api-Key", b"k"), (b"Cookie", b"c=1"),
        (b"Content-Type", b"application/json"), (b"X-Other", b"o"), (b"X-Trace", b"t"),
    ])  # fmt: skip
    assert kept == {"content-type": "application/json", "x-trace": "t"}
    assert all(map(secret_header, ["X-Auth-Token", "x-session-id", "Proxy-Authorization"]))
    assert not secret_header("user-agent")


def test_shipped_patterns_find_emails_cards_and_phones_not_numbers() -> None:
    """A Luhn-valid card, a phone number, an e-mail are replaced; decimals, dates, ids are not."""
    red = Redactor([], patterns=ALL)
    text = "mail jo.x@example.co.uk, card 4111 1111 1111 1111, call +44 20 7946 0958"
    assert red.text(text) == "mail [email], card [card], call [phone]"
    for plain in ("0.123456789", "2026-12-04", "order 12345678", "4111 1111 1111 1112 x"):
        assert "[" not in red.text(plain), plain


def test_patterns_can_be_switched_off_and_custom_ones_added() -> None:
    """No shipped pattern: e-mails stay; a custom regex replaces with its name."""
    red = Redactor([], patterns=(), custom=[("iban", r"DE\d{20}")])
    assert red.text("jo@example.com DE89370400440532013000") == "jo@example.com [iban]"


def test_paths_are_removed_or_hashed_and_strings_redacted_keys_too() -> None:
    """remove takes a field out (wildcards too), hash leaves length + hash, equal values equal."""
    red = Redactor([], remove=["$.rows[*].ssn"], hashed=["$.user.id", "$.other.id"], patterns=ALL)
    doc: Any = {"rows": [{"ssn": 1, "a": "x"}, {"ssn": 2}], "user": {"id": "u1"},
                "other": {"id": "u1"}, "jo@example.com": "write me at jo@example.com"}  # fmt: skip
    out: Any = red.document(doc)
    assert out["rows"] == [{"a": "x"}, {}]
    assert (
        out["user"]["id"]
        == out["other"]["id"]
        == {"redacted": 4, "sha256": out["user"]["id"]["sha256"]}
    )
    assert out["[email]"] == "write me at [email]"
    assert doc["rows"][0]["ssn"] == 1  # the input is not changed


def test_a_document_too_deep_to_walk_fails_closed() -> None:
    """Nesting past MAX_DEPTH raises: the caller drops the record, never keeps it raw."""
    deep: object = "jo@example.com"
    for _ in range(100):
        deep = [deep]
    with pytest.raises(RedactionError):
        Redactor([], patterns=ALL).document(deep)


async def test_a_record_whose_redaction_fails_is_dropped_and_counted(tmp_path: object) -> None:
    """The capture pass drops it (failed{reason=redaction}) and writes nothing."""
    config = parse(
        "backends: {a: {url: http://127.0.0.1:1}}\nroutes:\n  - name: r\n"
        "    match: {path_prefix: /}\n    strategy: {split: {weights: {a: 100}}}\n"
        f"    capture: {{sink: {{file: {{path: {tmp_path}/c.jsonl}}}}}}\n"
    )
    capture = Capture(Runtime(config=config, table=build_table(config)))
    tap = capture.sink.tap("r", 1.0, 64 * 1024, "all", b"POST", b"/")
    assert tap is not None
    tap.add_request(b"[" * 100 + b"]" * 100)
    tap.finish("r", "a", "w", "rid1", 200, 0.001, [(b"content-type", b"application/json")])
    assert await capture.run_pass() == 0
    assert 'router_capture_failed_total{route="r",reason="redaction"} 1' in "\n".join(
        capture.metric_lines()
    )
    await capture.stop()
