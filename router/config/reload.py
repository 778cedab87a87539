"""Hot reload: watch config.yaml, apply a valid edit, refuse a bad one.

Theory of operation. A background task polls the file's (mtime_ns, size,
inode) every `interval`. Only when that stamp moves is the file read and its
sha256 compared with the last content seen; the same bytes do nothing (a
`touch`, or an editor saving an unchanged buffer). New bytes are prepared
(parsed, and whatever the caller builds from them: the routing table) and a
good result goes to `on_change`, a bad one to `on_error` once per distinct
content; the caller keeps serving the last good config.

Reading, hashing and preparing run in a worker thread, never on the event
loop: a 10,000-route file or a hostile one must not hold up a request. The
parser's caps (router/config/yamlload.py) bound the work; `PREPARE_TIMEOUT` bounds
the wait (a result that comes later is dropped and the edit refused). Only
`on_change` runs on the loop: it swaps references. One check at a time: the
poll and `POST /v1/config/reload` take turns, so edits apply in order.

Editors that save by writing a new file and renaming it over the old one
change the inode, which the stamp includes. A file briefly missing (between an
editor's unlink and create) is skipped silently; a half-written file is just a
parse error and the completing write, which moves the stamp, recovers.

File timestamps are coarse (kernel ticks of a few ms), so two writes of the
same size inside one tick leave the same stamp. A stamp younger than
`_RACY_NS` is therefore not trusted: the file is re-read (and re-hashed) on
every poll until it ages, the way git treats "racily clean" index entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import fields
from typing import Any, Generic, TypeVar

from router.config.reader import parse
from router.config.spec import Config
from router.core.confkit import ConfigError

_RACY_NS = 2_000_000_000  # stamps younger than this may hide a second write
PREPARE_TIMEOUT = 10.0  # seconds a reload may take to read, parse and build

T = TypeVar("T")

Stamp = tuple[int, int, int]  # (mtime_ns, size, inode)


def _stamp(path: str) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _read(path: str) -> tuple[bytes, str] | None:
    """The file's bytes and their hash (in the worker thread: either may take ms)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data, content_hash(data)


def content_hash(data: bytes) -> str:
    """The same 12 hex digits as `Config.source_hash`."""
    return hashlib.sha256(data).hexdigest()[:12]


def parse_only(data: bytes, source: str) -> Config:
    return parse(data, source=source)


class ConfigWatcher(Generic[T]):
    """Polls one config file and reports good and bad versions of it.

    `prepare(data, source)` turns the file's bytes into what `on_change` takes (by
    default the parsed Config); it runs in a worker thread and raises ConfigError
    for a bad file."""

    def __init__(
        self,
        path: str,
        on_change: Callable[[T], None],
        on_error: Callable[[str], None],
        interval: float = 0.25,
        *,
        prepare: Callable[[bytes, str], T],
        current_hash: str | None = None,
        timeout: float = PREPARE_TIMEOUT,
    ) -> None:
        """`current_hash`: the source_hash of the config already serving, so that an
        edit made between the first load and `start()` is still applied."""
        self.path = path
        self.interval = interval
        self.timeout = timeout
        self._prepare = prepare
        self._on_change = on_change
        self._on_error = on_error
        self._hash = current_hash
        self._stamp: Stamp | None = None
        self._task: asyncio.Task[None] | None = None
        self._turn = asyncio.Lock()

    async def start(self) -> None:
        if self._task is not None:
            return
        if self._hash is None:
            # no hash given: whatever is on disk now is what the caller loaded
            read = await asyncio.to_thread(_read, self.path)
            self._hash = read[1] if read is not None else None
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name=f"config-watcher:{self.path}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def check_now(self) -> bool:
        """Re-read the file if its stamp moved; True when a new config was applied."""
        async with self._turn:
            return await self._check()

    async def _check(self) -> bool:
        stamp = _stamp(self.path)  # one stat(): microseconds, fine on the loop
        if stamp is None or stamp == self._stamp:
            return False
        read = await asyncio.to_thread(_read, self.path)
        if read is None:
            return False  # vanished between stat and open: next poll retries
        # trust the stamp only once it is old enough that no same-tick write can hide
        self._stamp = stamp if time.time_ns() - stamp[0] > _RACY_NS else None
        data, digest = read
        if digest == self._hash:
            return False
        self._hash = digest
        return await self._apply(data)

    async def _apply(self, data: bytes) -> bool:
        work = asyncio.to_thread(self._prepare, data, self.path)
        try:
            prepared = await asyncio.wait_for(work, self.timeout)
        except ConfigError as exc:
            self._on_error("; ".join(exc.errors))
            return False
        except TimeoutError:
            self._on_error(f"{self.path}: reading the config took over {self.timeout:g}s")
            return False
        except Exception as exc:  # a parser bug must not end hot reload for good
            self._on_error(f"{self.path}: reading the config failed: {exc!r}")
            return False
        try:
            self._on_change(prepared)
        except Exception as exc:  # a failing callback must not kill the watcher
            self._on_error(f"{self.path}: applying the new config failed: {exc!r}")
            return False
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check_now()


# -- what changed, for the log -----------------------------------------------
def _changed_fields(old: Any, new: Any) -> list[str]:
    return [f.name for f in fields(old) if getattr(old, f.name) != getattr(new, f.name)]


def _diff_named(what: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    lines = [f"{what} added: {name}" for name in new if name not in old]
    lines += [f"{what} removed: {name}" for name in old if name not in new]
    for name in sorted(old.keys() & new.keys()):
        if old[name] != new[name]:
            parts = ", ".join(_changed_fields(old[name], new[name]))
            lines.append(f"{what} changed: {name} ({parts})")
    return lines


def diff_summary(old: Config, new: Config) -> list[str]:
    """One line per change between two configs: sections, backends, routes."""
    lines = [
        f"{name} changed"
        for name in _changed_fields(old, new)
        if name not in ("backends", "routes", "source_hash")
    ]
    lines += _diff_named("backend", dict(old.backends), dict(new.backends))
    lines += _diff_named("route", {r.name: r for r in old.routes}, {r.name: r for r in new.routes})
    return lines
