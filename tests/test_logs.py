"""Logging: JSON lines on stderr, and the recorder fanout (access lines: test_accesslog.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from router.dataplane.metrics import Metrics
from router.ops.logs import Fanout, configure_logging
from tests.support.dataplane import ListRecorder


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo configure_logging's global changes after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_fanout_reaches_every_recorder() -> None:
    """Fanout hands each request to every recorder, in order."""
    metrics, listed = Metrics(), ListRecorder()
    fan = Fanout(metrics, listed)
    fan.record("r", "b", 503, 0.01, "w", "x", 5)
    stats = metrics.local("r", "b")
    assert (stats.requests, stats.errors) == (1, 1)
    assert [(r.route, r.status, r.request_id) for r in listed.records] == [("r", 503, "x")]


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_writes_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """Each event is one JSON line on stderr with ts, level and event; below-level ones dropped."""
    configure_logging("info")
    log = structlog.get_logger("t")
    log.debug("hidden")
    log.info("shown", route="iris")
    logging.getLogger("aiohttp.test").warning("from stdlib %s", "logging")
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events] == ["shown", "from stdlib logging"]
    first = events[0]
    assert list(first)[:3] == ["ts", "level", "event"]
    assert first["level"] == "info"
    assert first["route"] == "iris"
    assert first["ts"].startswith("20")
    assert events[1]["level"] == "warning"


def test_configure_logging_rejects_unknown_level() -> None:
    """A typo in the level is an error naming the choices, not a silent default."""
    with pytest.raises(ValueError, match="debug, info"):
        configure_logging("loud")
