"""Hot reload: watch config.yaml, apply a valid edit, refuse a bad one.

Theory of operation. A background task polls the file's (mtime_ns, size,
inode) every `interval`. Only when that stamp moves is the file read and its
sha256 compared with the last content seen; the same bytes do nothing (a
`touch`, or an editor saving an unchanged buffer). New bytes are parsed: a
valid config goes to `on_change`, a bad one to `on_error` once per distinct
content, and the caller keeps serving the last good config.

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
from typing import Any

from router.config import parse
from router.confkit import ConfigError
from router.spec import Config

_RACY_NS = 2_000_000_000  # stamps younger than this may hide a second write

Stamp = tuple[int, int, int]  # (mtime_ns, size, inode)


def _stamp(path: str) -> Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def content_hash(data: bytes) -> str:
    """The same 12 hex digits as `Config.source_hash`."""
    return hashlib.sha256(data).hexdigest()[:12]


class ConfigWatcher:
    """Polls one config file and reports good and bad versions of it."""

    def __init__(
        self,
        path: str,
        on_change: Callable[[Config], None],
        on_error: Callable[[str], None],
        interval: float = 0.25,
        *,
        current_hash: str | None = None,
    ) -> None:
        """`current_hash`: the source_hash of the config already serving, so that an
        edit made between the first load and `start()` is still applied."""
        self.path = path
        self.interval = interval
        self._on_change = on_change
        self._on_error = on_error
        self._hash = current_hash
        self._stamp: Stamp | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is not None:
            return
        if self._hash is None:
            # no hash given: whatever is on disk now is what the caller loaded
            data = _read(self.path)
            self._hash = content_hash(data) if data is not None else None
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name=f"config-watcher:{self.path}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def check_now(self) -> bool:
        """Re-read the file if its stamp moved; True when a new config was applied."""
        stamp = _stamp(self.path)
        if stamp is None or stamp == self._stamp:
            return False
        data = _read(self.path)
        if data is None:
            return False  # vanished between stat and open: next poll retries
        # trust the stamp only once it is old enough that no same-tick write can hide
        self._stamp = stamp if time.time_ns() - stamp[0] > _RACY_NS else None
        digest = content_hash(data)
        if digest == self._hash:
            return False
        self._hash = digest
        return self._apply(data)

    def _apply(self, data: bytes) -> bool:
        try:
            config = parse(data, source=self.path)
        except ConfigError as exc:
            self._on_error("; ".join(exc.errors))
            return False
        except Exception as exc:  # a parser bug must not end hot reload for good
            self._on_error(f"{self.path}: reading the config failed: {exc!r}")
            return False
        try:
            self._on_change(config)
        except Exception as exc:  # a failing callback must not kill the watcher
            self._on_error(f"{self.path}: applying the new config failed: {exc!r}")
            return False
        return True

    async def _run(self) -> None:
        # stat and a read of a small file from the page cache cost microseconds, and
        # the callbacks must run on the loop (the runtime swaps references there)
        while True:
            await asyncio.sleep(self.interval)
            self.check_now()


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
