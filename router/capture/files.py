"""The JSON-lines file sink: size-rotated, count-capped, written off the event loop.

Lines are buffered in memory (at most `max_buffer` bytes: past that a line is
refused and the caller counts it dropped) and written by one thread call per
pass, so a slow disk never holds up the loop. A file that would pass
`max_bytes` is rotated first, like logrotate: `path` -> `path.1` -> ... ->
`path.<keep>`, the oldest removed; a single line is never split across two
files. A failed write counts its lines failed and the sink tries again on the
next pass with new lines (the failed ones are gone: never retried unbounded).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

import structlog

from router.config.spec import FileSinkSpec

log = structlog.get_logger("router.capture")

MAX_BUFFER = 16 * 1024 * 1024  # lines waiting for the next write, at most


def rotated(path: str, keep: int) -> list[str]:
    """The sink's files, oldest first (what export reads)."""
    older = [f"{path}.{i}" for i in range(keep, 0, -1)]
    return [p for p in [*older, path] if os.path.exists(p)]


class FileSink:
    """One file path's lines; shared by every route that names the same path."""

    kind = "file"

    def __init__(self, spec: FileSinkSpec, max_buffer: int = MAX_BUFFER) -> None:
        self.spec = spec
        self.max_buffer = max_buffer
        self.lines: list[tuple[str, str, bytes]] = []  # (route, kind, line)
        self.buffered = 0
        self.written: dict[tuple[str, str], int] = {}  # (route, kind) -> lines written
        self.failed: dict[str, int] = {}  # route -> lines lost to write errors
        self._file: BinaryIO | None = None
        self._size = 0
        self._writing: asyncio.Future[bool] | None = None
        self._broken = False

    def offer(self, route: str, kind: str, record: dict[str, Any], line: bytes) -> bool:
        if self.buffered + len(line) > self.max_buffer:
            return False
        self.lines.append((route, kind, line))
        self.buffered += len(line)
        return True

    def depth(self) -> int:
        return len(self.lines)

    async def flush(self) -> None:
        """Write what is buffered, in a thread; one write at a time."""
        if self._writing is not None or not self.lines:
            return
        lines, self.lines, self.buffered = self.lines, [], 0
        loop = asyncio.get_running_loop()
        self._writing = loop.run_in_executor(None, self._write, [line for _, _, line in lines])
        try:
            ok = await self._writing
        finally:
            self._writing = None
        counts = self.written if ok else None
        for route, kind, _ in lines:
            if counts is not None:
                counts[(route, kind)] = counts.get((route, kind), 0) + 1
            else:
                self.failed[route] = self.failed.get(route, 0) + 1

    def _write(self, lines: list[bytes]) -> bool:
        try:
            for chunk in self._chunks(lines):
                f = self._open()
                f.write(chunk)
                self._size += len(chunk)
            if self._file is not None:
                self._file.flush()
        except OSError as exc:
            self._close()
            if not self._broken:
                log.warning("capture file not written", path=self.spec.path, error=str(exc))
            self._broken = True
            return False
        self._broken = False
        return True

    def _chunks(self, lines: list[bytes]) -> Iterator[bytes]:
        """Runs of whole lines that fit the current file; rotates between them."""
        run: list[bytes] = []
        size = self._current_size()
        for line in lines:
            if run and size + len(line) > self.spec.max_bytes:
                yield b"".join(run)
                run = []
            if size + len(line) > self.spec.max_bytes and size > 0:
                self._rotate()
                size = 0
            run.append(line)
            size += len(line)
        if run:
            yield b"".join(run)

    def _current_size(self) -> int:
        if self._file is None:
            try:
                self._size = os.path.getsize(self.spec.path)
            except OSError:
                self._size = 0
        return self._size

    def _open(self) -> BinaryIO:
        if self._file is None:
            folder = os.path.dirname(self.spec.path)
            if folder:
                os.makedirs(folder, exist_ok=True)
            self._file = open(self.spec.path, "ab")  # noqa: SIM115 (kept open between passes)
            self._size = self._file.tell()
        return self._file

    def _rotate(self) -> None:
        self._close()
        path, keep = self.spec.path, self.spec.keep
        if keep == 0:
            os.remove(path)
            return
        if os.path.exists(f"{path}.{keep}"):
            os.remove(f"{path}.{keep}")
        for i in range(keep - 1, 0, -1):
            if os.path.exists(f"{path}.{i}"):
                os.replace(f"{path}.{i}", f"{path}.{i + 1}")
        os.replace(path, f"{path}.1")

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def close(self) -> None:
        if self._writing is not None:  # a write in its thread: let it end before closing
            await asyncio.wait([self._writing])
        await self.flush()
        self._close()
