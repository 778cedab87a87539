"""Where access lines go: a file, stderr or stdout, written without ever blocking.

Theory of operation. `LogFile.write` gets a batch of whole lines (router/
accesslog.py) and makes one write() of it. A full or stalled destination (a
pipe whose reader stopped, a terminal on Ctrl-S, a socket) must never stop the
event loop, so every destination is written without blocking:

- a path (`logging.access_file: /var/log/router/access.log`) is opened with
  O_APPEND | O_NONBLOCK; SIGHUP reopens it (logrotate renames, then signals);
- stderr or stdout that is a regular file is written through its own fd
  (regular files never block; sharing the fd keeps one offset with the other
  events written there, so neither overwrites the other);
- stderr or stdout that is a pipe, FIFO or terminal is opened again through
  /proc/self/fd/N with O_NONBLOCK: a file description of our own, so the flag
  never reaches the shell's terminal or the other writers of that pipe;
- a socket (journald's stderr) is sent to with MSG_DONTWAIT, per call.

A pipe may have other writers (structlog's events on the same stderr): a
partial write would leave half a line there for their line to land in. So a
pipe gets whole lines in writes of at most PIPE_BUF bytes, which the kernel
writes all or not at all; only a line longer than PIPE_BUF can be cut.

What a write could not take stays as a backlog, in order, up to MAX_BACKLOG;
the newest whole lines beyond it are dropped and counted (`dropped`,
`router_access_log_dropped_total`), never a part of a line: a line that was
half written is always finished first, so the destination only ever holds
whole lines. Errors other than "would block" (a reader that went away, a full
disk) drop the batch, count its lines and are logged at most once a minute.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import stat
import time
from collections.abc import Callable
from typing import Final

import structlog

from router.config.spec import LoggingSpec
from router.dataplane.accesslog import AccessLog
from router.dataplane.metric_text import metric_lines

log = structlog.get_logger("router.access")

MAX_BACKLOG: Final = 1024 * 1024  # bytes kept while the destination is full
_STREAMS: Final = {"stderr": 2, "stdout": 1}
_WARN_EVERY: Final = 60.0  # seconds between two warnings about failed writes


class LogFileError(OSError):
    """The destination could not be opened; the message names it."""


class LogFile:
    """One destination for access lines; see the module docstring."""

    def __init__(self, target: str, *, max_backlog: int = MAX_BACKLOG) -> None:
        self.target = target
        self.max_backlog = max_backlog
        self.dropped = 0  # lines dropped since start
        self.pending = b""  # written partly or not at all yet; starts at a line's start
        self.torn = False  # `pending` starts inside a line whose head was written
        self._warned = 0.0
        self._fd = -1
        self._owned = False  # we opened _fd (and close it)
        self._send: Callable[[bytes], int] | None = None  # for sockets
        self._sock: socket.socket | None = None
        self._atomic = False  # a pipe: writes of whole lines, PIPE_BUF at most
        self._open()

    def backlog(self) -> int:
        return len(self.pending)

    def write(self, data: bytes) -> None:
        """Write `data` (whole lines) after any backlog, without blocking."""
        if self.pending:
            data = self.pending + data
        try:
            done = self._write_some(data)
        except BlockingIOError:
            done = 0
        except OSError as exc:
            self._lost(data, exc)
            return
        if done == len(data):
            self.pending, self.torn = b"", False
            return
        if done:  # a line was cut when the last byte written is not its end
            self.torn = data[done - 1 : done] != b"\n"
        rest = data[done:]
        if len(rest) > self.max_backlog:
            rest = self._trim(rest)
        self.pending = rest

    def reopen(self) -> None:
        """SIGHUP: open a path again (after logrotate); streams stay as they are."""
        if self.target in _STREAMS:
            return
        old_fd, old_owned = self._fd, self._owned
        try:
            self._open()
        except LogFileError as exc:
            log.error("access log reopen failed; still writing the old file", error=str(exc))
            return
        if old_owned:
            os.close(old_fd)
        log.info("access log reopened", path=self.target)

    def close(self) -> None:
        """Write what can be written now; count the rest as dropped; let go of the fd."""
        if self.pending:
            self.write(b"")
        if self.pending:
            self.dropped += self.pending.count(b"\n")
            self.pending = b""
        if self._owned and self._fd >= 0:
            os.close(self._fd)
        if self._sock is not None:
            self._sock.close()
        self._fd, self._owned, self._send, self._sock = -1, False, None, None

    # -- opening ---------------------------------------------------------------

    def _open(self) -> None:
        stream = _STREAMS.get(self.target)
        try:
            if stream is None:
                flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC
                self._fd, self._owned, self._send = os.open(self.target, flags, 0o644), True, None
            else:
                self._open_stream(stream)
            self._atomic = self._send is None and stat.S_ISFIFO(os.fstat(self._fd).st_mode)
        except OSError as exc:
            raise LogFileError(f"cannot open {self.target}: {exc.strerror or exc}") from exc

    def _open_stream(self, fd: int) -> None:
        mode = os.fstat(fd).st_mode
        if stat.S_ISSOCK(mode):
            sock = self._sock = socket.socket(fileno=os.dup(fd))
            self._fd, self._owned = sock.fileno(), False  # closed with the socket object
            self._send = lambda data: sock.send(data, socket.MSG_DONTWAIT)
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            flags = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC
            self._fd, self._owned, self._send = os.open(f"/proc/self/fd/{fd}", flags), True, None
        else:
            self._fd, self._owned, self._send = fd, False, None

    # -- writing ---------------------------------------------------------------

    def _write_some(self, data: bytes) -> int:
        if not data:
            return 0
        if self._send is not None:
            return self._send(data)
        if self._atomic:
            return self._write_lines(data)
        return os.write(self._fd, data)

    def _write_lines(self, data: bytes) -> int:
        """Whole lines in writes of PIPE_BUF at most; stops where the pipe is full."""
        done, size, view = 0, len(data), memoryview(data)
        while done < size:
            end = size
            if end - done > select.PIPE_BUF:
                end = data.rfind(b"\n", done, done + select.PIPE_BUF) + 1
                if end <= done:  # one line longer than PIPE_BUF: alone, maybe cut
                    end = data.find(b"\n", done) + 1 or size
            try:
                wrote = os.write(self._fd, view[done:end])
            except OSError:
                if done:
                    break  # what was written stays written; the next write meets the error
                raise
            done += wrote
            if done < end:
                break
        return done

    def _trim(self, rest: bytes) -> bytes:
        """Keep the oldest whole lines that fit the backlog; drop and count the newest."""
        cut = rest.rfind(b"\n", 0, self.max_backlog) + 1
        if self.torn and cut == 0:
            cut = rest.find(b"\n") + 1  # a torn line is always finished
        self.dropped += rest.count(b"\n", cut)
        return rest[:cut]

    def _lost(self, data: bytes, exc: OSError) -> None:
        """A failed write (not "would block"): the batch is dropped and counted."""
        self.dropped += data.count(b"\n")  # a torn line counts: its end is lost
        self.pending, self.torn = b"", False
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY:
            self._warned = now
            name = errno.errorcode.get(exc.errno or 0, "") if exc.errno else ""
            with contextlib.suppress(OSError):  # stderr itself may be what failed
                log.warning(
                    "access log write failed; lines are dropped and counted",
                    target=self.target,
                    error=str(exc),
                    errno=name,
                    dropped=self.dropped,
                )


class AccessLogging:
    """One process's access log: the renderer, its destination, reloads and figures."""

    def __init__(self, spec: LoggingSpec) -> None:
        self.file = LogFile(spec.access_file)
        self.log = AccessLog(self.file, spec.access_sample)
        self.dropped_before = 0  # lines dropped by destinations replaced on reload

    def active(self) -> AccessLog | None:
        """What the data plane calls per request: None when nothing is ever logged."""
        return self.log if self.log.step else None

    def apply(self, spec: LoggingSpec) -> None:
        """A reloaded config: a new share, maybe a new destination (kept if it fails)."""
        self.log.set_sample(spec.access_sample)
        if spec.access_file == self.file.target:
            return
        try:
            new = LogFile(spec.access_file)
        except LogFileError as exc:
            log.error("logging.access_file not changed", error=str(exc))
            return
        self.log.flush()
        old, self.file = self.file, new
        self.log.sink = new
        old.close()
        self.dropped_before += old.dropped  # one counter for the process's life

    def reopen(self) -> None:
        """SIGHUP: lines so far to the old file, the next ones to the reopened one."""
        self.log.flush()
        self.file.reopen()

    def close(self) -> None:
        self.log.close()
        self.file.close()

    def metric_lines(self) -> list[str]:
        lines = metric_lines(
            "router_access_log_lines_total",
            "counter",
            "Access lines made (the logging.access_sample share of requests).",
            [({}, self.log.rendered)],
        )
        lines += metric_lines(
            "router_access_log_dropped_total",
            "counter",
            "Access lines dropped because the destination was full, stalled or failing.",
            [({}, self.dropped_before + self.file.dropped)],
        )
        return lines
