"""Capture's parts without sockets: the tap's bounds, what a body becomes, the file sink."""

from __future__ import annotations

import asyncio
from pathlib import Path

from router.capture.files import FileSink
from router.capture.records import body
from router.config.spec import FileSinkSpec
from router.core.redact import Redactor
from router.dataplane.capture_copy import CaptureSink

RED = Redactor(["content-type"], patterns=["email"])
JSON = [(b"content-type", b"application/json")]


def test_a_full_pending_list_refuses_taps_and_counts_them() -> None:
    """Past max_pending the request path gets no tap (one length test), and it is counted."""
    sink = CaptureSink(max_pending=2)
    for _ in range(2):
        tap = sink.tap("r", 1.0, 100, "all", b"POST", b"/")
        assert tap is not None
        tap.finish("r", "a", "w", "id", 200, 0.001, [])
    assert sink.tap("r", 1.0, 100, "all", b"POST", b"/") is None
    assert sink.dropped == {"r": 1}
    assert len(sink.take()) == 2
    assert sink.tap("r", 1.0, 100, "all", b"POST", b"/") is not None


def test_the_tap_keeps_pieces_up_to_its_cap_and_counts_the_rest() -> None:
    """A long body is not kept past the cap; its length is still known."""
    tap = CaptureSink().tap("r", 1.0, 10, "all", b"POST", b"/")
    assert tap is not None
    for _ in range(5):
        tap.add_request(b"0123456789")
    assert (tap.req, tap.req_len) == ([b"0123456789"], 50)


def test_sample_zero_keeps_nothing() -> None:
    """sample: 0 never taps."""
    sink = CaptureSink()
    assert all(sink.tap("r", 0.0, 10, "all", b"GET", b"/") is None for _ in range(100))


def test_a_body_cut_at_max_body_keeps_only_its_length_and_hash() -> None:
    """A cut document cannot be redacted with certainty: nothing of it is kept."""
    part = body([b'{"email": "jo@example.com", "x": 1}'], 400, 20, JSON, RED, "json")
    assert part["bytes"] == 400
    assert "sha256" in part
    assert "json" not in part
    assert "text" not in part


def test_json_text_and_binary_bodies() -> None:
    """JSON is decoded and redacted, text redacted, binary only hashed."""
    doc = body([b'{"to": "jo@example.com"}'], 25, 100, JSON, RED, "json")
    assert doc["json"] == {"to": "[email]"}
    text = body([b"write to jo@example.com"], 23, 100, [], RED, "json")
    assert text["text"] == "write to [email]"
    blob = body([b"\xff\xfe\x00"], 3, 100, [], RED, "json")
    assert "sha256" in blob
    assert "text" not in blob


async def test_a_file_that_cannot_be_written_counts_its_lines_failed(tmp_path: Path) -> None:
    """A write error loses the lines (counted), never blocks or raises."""
    (tmp_path / "file").write_text("")
    sink = FileSink(FileSinkSpec(str(tmp_path / "file" / "sub.jsonl")))
    assert sink.offer("r", "exchange", {}, b"{}\n")
    await sink.flush()
    assert sink.failed == {"r": 1}
    assert sink.written == {}


async def test_a_sink_buffer_refuses_lines_past_its_cap(tmp_path: Path) -> None:
    """The file sink's buffer is bounded: past it offer() says no (the caller counts a drop)."""
    sink = FileSink(FileSinkSpec(str(tmp_path / "x.jsonl")), max_buffer=10)
    assert sink.offer("r", "exchange", {}, b"123456\n")
    assert not sink.offer("r", "exchange", {}, b"123456\n")
    await asyncio.wait_for(sink.close(), 5)
    assert (tmp_path / "x.jsonl").read_bytes() == b"123456\n"


async def test_a_reload_that_changes_a_sinks_caps_reopens_it_and_keeps_its_figures(
    tmp_path: Path,
) -> None:
    """New max_bytes for the same path: a new sink with the new caps; counts run on."""
    from dataclasses import replace

    from router.capture.writer import Capture
    from router.config.reader import parse
    from router.dataplane.routing import build_table
    from router.runtime import Runtime

    text = (
        "backends: {a: {url: http://127.0.0.1:1}}\nroutes:\n  - name: r\n"
        "    match: {path_prefix: /}\n    strategy: {split: {weights: {a: 100}}}\n"
        f"    capture: {{sink: {{file: {{path: {tmp_path}/c.jsonl, max_bytes: MAX}}}}}}\n"
    )
    first = parse(text.replace("MAX", "1MiB"))
    runtime = Runtime(config=first, table=build_table(first))
    capture = Capture(runtime)
    old = capture.sinks[f"file:{tmp_path}/c.jsonl"]
    old.written[("r", "exchange")] = 7
    second = parse(text.replace("MAX", "2MiB"))
    runtime.swap_config(second, build_table(second))
    capture.apply_config(replace(second))
    new = capture.sinks[f"file:{tmp_path}/c.jsonl"]
    assert new is not old
    assert isinstance(new, FileSink)
    assert new.spec.max_bytes == 2 * 1024 * 1024
    assert new.written == {("r", "exchange"): 7}
    await capture.stop()
