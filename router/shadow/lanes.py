"""What `Mirrors` (router/shadow/mirror.py) holds per mirrored backend and per route.

A `Lane` per mirrored backend: its own pool, bounded queue and worker tasks,
and a `Breaker` that leaves a failing shadow alone for a growing while. A
`RouteFigures` per route: the comparison tallies, event counts and sampled
disagreements gathered between two flushes to the store (drained in one call,
put back when the store is down).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from router.dataplane.shadow_copy import MirrorCopy
from router.dataplane.upstream import UpstreamPool
from router.shadow.figures import Tally, escape
from router.shadow.stored import EVENTS

BREAKER_FAILURES: Final = 5  # failures in a row before a shadow is left alone
BREAKER_MIN: Final = 0.5  # seconds the first time; doubles up to BREAKER_MAX
BREAKER_MAX: Final = 30.0
SAMPLES_PER_FLUSH: Final = 10  # per route: a flood of disagreements costs few round trips


@dataclass(slots=True)
class Breaker:
    """Stops sending copies to a shadow that keeps failing, for a growing while.

    A dead or resetting shadow fails fast, so without this the workers would
    spin through the queue opening a connection per copy, spending the CPU the
    clients' requests need. After BREAKER_FAILURES failures in a row the lane
    skips copies (counted as `down`, and as dropped) for `backoff` seconds,
    doubling up to BREAKER_MAX; the first copy after that is a probe: an answer
    closes the breaker, a failure opens it again for longer.
    """

    failures: int = 0
    open_until: float = 0.0
    backoff: float = BREAKER_MIN

    def is_open(self, now: float) -> bool:
        return now < self.open_until

    def answered(self) -> None:
        self.failures, self.backoff = 0, BREAKER_MIN

    def failed(self, now: float) -> bool:
        """Count one failure; True when this one opened the breaker."""
        self.failures += 1
        if self.failures < BREAKER_FAILURES:
            return False
        self.open_until = now + self.backoff
        self.backoff = min(self.backoff * 2, BREAKER_MAX)
        return True


@dataclass(slots=True)
class Lane:
    """One mirrored backend: its own pool, bounded queue and worker tasks."""

    name: str
    pool: UpstreamPool
    queue: asyncio.Queue[MirrorCopy]
    workers: set[asyncio.Task[None]] = field(default_factory=set)
    busy: int = 0  # copies being sent now (at most the worker count)
    sent_key: str = ""  # event counter names, built once: not per copy
    dropped_key: str = ""
    errors_key: str = ""
    down_key: str = ""
    rewrite_key: str = ""
    breaker: Breaker = field(default_factory=Breaker)

    def __post_init__(self) -> None:
        key = escape(self.name)
        self.sent_key, self.dropped_key, self.errors_key, self.down_key = (
            f"sent|{key}",
            f"dropped|{key}",
            f"errors|{key}",
            f"down|{key}",
        )
        self.rewrite_key = f"rewrite_failed|{key}"


@dataclass(slots=True)
class RouteFigures:
    """In-process figures of one route between two flushes."""

    tallies: dict[str, Tally] = field(default_factory=dict)  # counter name -> Tally
    windows: dict[str, Tally] = field(default_factory=dict)  # counter name -> Tally
    events: dict[str, int] = field(default_factory=dict)
    samples: deque[str] = field(default_factory=lambda: deque(maxlen=SAMPLES_PER_FLUSH))

    def count(self, event: str, by: int = 1) -> None:
        self.events[event] = self.events.get(event, 0) + by

    def tally(self, name: str) -> Tally:
        """The tally of one counter hash (`counter_name`: backend and compare id)."""
        found = self.tallies.get(name)
        if found is None:
            found = self.tallies[name] = Tally(name)
        return found

    def window_tally(self, name: str) -> Tally:
        found = self.windows.get(name)
        if found is None:
            found = self.windows[name] = Tally(name)
        return found

    def drain(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for tally in self.tallies.values():
            out.update(tally.drain())
        for name, tally in list(self.windows.items()):
            drained = tally.drain()
            out.update(drained)
            if not drained:  # a past window: nothing more will come
                del self.windows[name]
        if self.events:
            out[EVENTS], self.events = self.events, {}
        return out

    def restore(self, drained: Mapping[str, Mapping[str, int]]) -> None:
        for tally in self.tallies.values():
            tally.restore(drained)
        plain = {tally.name for tally in self.tallies.values()}
        for name in drained.keys() - plain - {EVENTS}:  # the windows' hashes
            self.window_tally(name).restore(drained)
        for key, value in drained.get(EVENTS, {}).items():
            self.count(key, value)
