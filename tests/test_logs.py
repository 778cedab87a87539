"""Logging: JSON lines on stderr, the sampled access line, and the recorder fanout."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from router.logs import AccessLog, Fanout, configure_logging
from router.metrics import Metrics


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo configure_logging's global changes after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_access_line_has_request_fields_and_no_body() -> None:
    """sample=1 logs every request with id, route, backend, reason, status, latency, bytes."""
    access = AccessLog(sample=1.0)
    with capture_logs() as logs:
        access.record("iris", "iris-v2", 200, 0.0123456, "weight", "req-1", 321)
        access.record("iris", "iris-v1", 502, 2.0, "sticky", "req-2", 0)
    assert len(logs) == 2
    first = logs[0]
    assert first == {
        "event": "access",
        "log_level": "info",
        "request_id": "req-1",
        "route": "iris",
        "backend": "iris-v2",
        "reason": "weight",
        "status": 200,
        "latency_ms": 12.35,
        "bytes": 321,
    }
    assert not any("body" in key for entry in logs for key in entry)


def test_access_sampling_is_exact_share() -> None:
    """sample=0.1 logs exactly one request in ten, sample=0 none at all."""
    tenth, off = AccessLog(sample=0.1), AccessLog(sample=0.0)
    with capture_logs() as logs:
        for i in range(1000):
            tenth.record("r", "b", 200, 0.001, "w", str(i), 1)
            off.record("r", "b", 200, 0.001, "w", str(i), 1)
    assert len(logs) == 100


def test_fanout_reaches_every_recorder() -> None:
    """Fanout hands each request to metrics and the access log alike."""
    metrics = Metrics()
    fan = Fanout(metrics, AccessLog(sample=1.0))
    with capture_logs() as logs:
        fan.record("r", "b", 503, 0.01, "w", "x", 5)
    assert len(logs) == 1
    stats = metrics.local("r", "b")
    assert (stats.requests, stats.errors) == (1, 1)


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
