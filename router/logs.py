"""Structured logs: JSON lines on stderr, and the per-request access line.

Theory of operation
-------------------
`configure_logging` makes structlog render one JSON object per line to stderr
with `ts` (ISO 8601, UTC), `level` and `event` first, then the event's own
keys. The standard library's `logging` (aiohttp, asyncio, redis) is routed
through the same renderer, so an operator's log shipper sees one format.

`AccessLog` is a `Recorder`: the proxy tells it about every finished request
and it writes an `access` event for a share of them. Sampling uses an
accumulator instead of a random draw: with `sample=0.1` exactly one request in
ten is logged, deterministically, and `sample=0` costs one comparison. Request
and response bodies are never passed to it, so they can never be logged here.

`Fanout` hands each request to several recorders (metrics, access log, ...)
through one `record` call. A recorder that is `idle` (an access log with
`sample=0`) is left out when the fan-out is built, and the data plane calls
the remaining `record` methods itself (`Fanout.flat`): on the request path,
every call saved is about 0.1 µs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from router.runtime import Recorder

RecordFn = Callable[[str, str, int, float, str, str, int], None]


def _level_number(level: str) -> int:
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}: use debug, info, warning or error")
    return number


def _order_keys(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """Put ts, level and event first so a human scanning raw lines finds them."""
    head = {k: event.pop(k) for k in ("ts", "level", "event") if k in event}
    return {**head, **event}


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.format_exc_info,
    ]


def configure_logging(level: str) -> None:
    """JSON lines on stderr at `level` (debug, info, warning, error) for structlog and logging."""
    number = _level_number(level)
    render: list[Processor] = [_order_keys, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=[*_shared_processors(), *render],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,  # tests swap processors (capture_logs)
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_shared_processors(),
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)


_SCALE = 1_000_000  # sampling resolution: one in a million


class AccessLog:
    """A Recorder writing one `access` event for a `sample` share (0..1) of requests."""

    def __init__(self, sample: float = 1.0, logger: Any = None) -> None:
        self.sample = min(max(sample, 0.0), 1.0)
        self._step = round(self.sample * _SCALE)  # integers: no float drift over millions
        self._credit = 0
        self._log = logger if logger is not None else structlog.get_logger("router.access")

    @property
    def idle(self) -> bool:
        """True when no request is ever logged (sample 0): nothing to call."""
        return not self._step

    def record(
        self,
        route: str,
        backend: str,
        status: int,
        seconds: float,
        reason: str,
        request_id: str,
        nbytes: int,
    ) -> None:
        if not self._step:
            return
        # Accumulate the share per request and log when it reaches a whole one:
        # an exact 1-in-N pattern with no random draw.
        self._credit += self._step
        if self._credit < _SCALE:
            return
        self._credit -= _SCALE
        self._log.info(
            "access",
            request_id=request_id,
            route=route,
            backend=backend,
            reason=reason,
            status=status,
            latency_ms=round(seconds * 1000, 2),
            bytes=nbytes,
        )


class Fanout:
    """A Recorder passing each request to every recorder given, in order."""

    __slots__ = ("_targets",)

    def __init__(self, *recorders: Recorder) -> None:
        self._targets = tuple(r.record for r in recorders if not getattr(r, "idle", False))

    def flat(self) -> tuple[RecordFn, ...]:
        """The `record` methods this fan-out calls, for a caller that calls them itself."""
        return self._targets

    def record(
        self,
        route: str,
        backend: str,
        status: int,
        seconds: float,
        reason: str,
        request_id: str,
        nbytes: int,
    ) -> None:
        for target in self._targets:
            target(route, backend, status, seconds, reason, request_id, nbytes)
