"""The access log: what one line holds, sampling, batching, and a destination that stalls.

The sinks here are real: a list that keeps each batch (to count writes), pipes
(whose capacity is set small so "full" comes quickly) and files.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.config.spec import LoggingSpec
from router.dataplane.accesslog import FLUSH_BYTES, FLUSH_INTERVAL, AccessLog
from router.ops.logfile import AccessLogging, LogFile, LogFileError

KEYS = [
    "ts",
    "event",
    "request_id",
    "route",
    "backend",
    "reason",
    "status",
    "latency_ms",
    "bytes",
    "method",
    "path",
]


class Batches:
    """A sink that keeps every batch it is given (one entry per write)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def backlog(self) -> int:
        return 0

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for data in self.writes for line in data.splitlines()]


def one(log: AccessLog, i: int = 0, target: bytes = b"/v2/models/iris/infer?x=1") -> None:
    log.log(b"POST", target, "iris", "iris-v2", 200, 0.0123456, "weight", f"req-{i}", 321)


def test_line_has_every_key_in_order_and_the_path_without_query() -> None:
    """One JSON object per line: ts, event, ids, decision, status, latency, bytes, method, path."""
    sink = Batches()
    log = AccessLog(sink)
    one(log)
    log.log(b"GET", b"/", "", "", 404, 2.0, "", "r2", 0)
    log.flush()
    assert len(sink.writes) == 1
    first, second = sink.lines()
    assert list(first) == KEYS
    assert {k: v for k, v in first.items() if k != "ts"} == {
        "event": "access",
        "request_id": "req-0",
        "route": "iris",
        "backend": "iris-v2",
        "reason": "weight",
        "status": 200,
        "latency_ms": 12.35,
        "bytes": 321,
        "method": "POST",
        "path": "/v2/models/iris/infer",
    }
    ts = str(first["ts"])
    assert len(ts) == len("2026-01-02T03:04:05.678Z")
    assert (ts[10], ts[-1]) == ("T", "Z")
    assert (second["status"], second["latency_ms"], second["path"]) == (404, 2000.0, "/")


def test_quotes_backslashes_and_unicode_stay_valid_json() -> None:
    """A request id or path with a quote or backslash, a route name in Unicode: still JSON."""
    sink = Batches()
    log = AccessLog(sink)
    log.log(b"GET", b'/a"b\\c?q="', "rüte", 'b"1', 200, 0.001, "w\n", 'id"\\', 1)
    log.flush()
    [line] = sink.lines()
    assert (line["path"], line["route"], line["backend"]) == ('/a"b\\c', "rüte", 'b"1')
    assert (line["request_id"], line["reason"]) == ('id"\\', "w\n")


def test_sampling_logs_an_exact_share() -> None:
    """sample=0.1 logs exactly one request in ten, with no random draw."""
    sink = Batches()
    log = AccessLog(sink, sample=0.1)
    for i in range(1000):
        one(log, i)
    log.flush()
    assert len(sink.lines()) == 100
    assert log.rendered == 100


def test_a_zero_share_is_no_access_log_at_all(tmp_path: Path) -> None:
    """`active()` is None at sample 0, and the log again after a reload raises the share."""
    logging = AccessLogging(LoggingSpec(access_sample=0, access_file=str(tmp_path / "a.log")))
    try:
        assert logging.active() is None
        logging.apply(LoggingSpec(access_sample=0.5, access_file=str(tmp_path / "a.log")))
        assert logging.active() is logging.log
    finally:
        logging.close()


def test_lines_are_written_in_batches_not_one_write_per_request() -> None:
    """Thousands of requests make a handful of writes, each of whole lines, at most ~FLUSH_BYTES."""
    sink = Batches()
    log = AccessLog(sink)
    for i in range(5000):
        one(log, i)
    log.flush()
    lines = sink.lines()
    assert [line["request_id"] for line in lines] == [f"req-{i}" for i in range(5000)]
    total = sum(len(w) for w in sink.writes)
    assert len(sink.writes) <= total // FLUSH_BYTES + 1
    assert all(w.endswith(b"\n") for w in sink.writes)
    assert max(len(w) for w in sink.writes) < FLUSH_BYTES + 1024


async def test_a_quiet_log_is_written_one_interval_after_its_first_line() -> None:
    """A few lines wait for the interval (no write per request), then go out in one write."""
    sink = Batches()
    log = AccessLog(sink)
    for i in range(3):
        one(log, i)
    assert sink.writes == []
    await asyncio.sleep(FLUSH_INTERVAL * 3)
    assert len(sink.writes) == 1
    assert len(sink.lines()) == 3
    log.close()


@pytest.fixture
def small_pipe() -> Iterator[tuple[int, int]]:
    """A pipe holding at most one page (4 KiB): full after a few lines."""
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    os.set_blocking(r, False)
    yield r, w
    for fd in (r, w):
        os.close(fd)


def drain(fd: int) -> bytes:
    out = bytearray()
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return bytes(out)
        if not chunk:
            return bytes(out)
        out += chunk


def lines_of(n: int, start: int = 0, size: int = 300) -> bytes:
    pad = "x" * (size - 40)
    return b"".join(b'{"n":%d,"pad":"%s"}\n' % (start + i, pad.encode()) for i in range(n))


def test_a_stalled_pipe_never_blocks_drops_whole_lines_and_counts_them(
    small_pipe: tuple[int, int],
) -> None:
    """Nobody reads: writes return at once, the backlog stays bounded, and after draining
    every line that arrived is whole and read + dropped == made."""
    r, w = small_pipe
    out = LogFile(f"/proc/self/fd/{w}", max_backlog=16 * 1024)
    made = 0
    for _ in range(40):
        out.write(lines_of(50, made))  # 40 x 15 KB into a 4 KB pipe: would block if blocking
        made += 50
        assert out.backlog() <= 16 * 1024
    assert out.dropped > 0
    got = drain(r)
    for _ in range(20):  # the reader is back: the backlog goes out, whole
        out.write(b"")
        got += drain(r)
    out.close()
    numbers = [json.loads(line)["n"] for line in got.splitlines()]
    assert len(numbers) + out.dropped == made
    assert numbers == sorted(numbers)  # in order; the newest were the ones dropped
    assert numbers[0] == 0


def test_a_full_pipe_gets_whole_lines_only(small_pipe: tuple[int, int]) -> None:
    """Lines up to PIPE_BUF go in writes the kernel takes whole or not at all: never a
    half line in the pipe for another writer's line to land in."""
    r, w = small_pipe
    out = LogFile(f"/proc/self/fd/{w}")
    out.write(lines_of(10, size=1000))  # 10 KB into 4 KB
    assert out.backlog() > 0
    assert not out.torn
    got = drain(r)
    assert got.endswith(b"\n")
    for _ in range(5):
        out.write(b"")
        got += drain(r)
    out.close()
    assert [json.loads(line)["n"] for line in got.splitlines()] == list(range(10))


def test_a_line_cut_by_a_full_pipe_is_finished_before_anything_else(
    small_pipe: tuple[int, int],
) -> None:
    """A line longer than PIPE_BUF can be cut; the next write completes it first."""
    r, w = small_pipe
    out = LogFile(f"/proc/self/fd/{w}")
    out.write(lines_of(3, size=6000))  # a 6 KB line into a 4 KB pipe: cut
    assert out.torn
    assert out.backlog() > 0
    got = drain(r)
    assert not got.endswith(b"\n")
    out.write(lines_of(2, 3, size=6000))
    for _ in range(10):
        got += drain(r)
        out.write(b"")
    got += drain(r)
    out.close()
    assert [json.loads(line)["n"] for line in got.splitlines()] == list(range(5))
    assert out.dropped == 0


def test_a_reader_that_went_away_drops_and_counts() -> None:
    """EPIPE is not "would block": the batch is dropped and counted, nothing raised."""
    r, w = os.pipe()
    out = LogFile(f"/proc/self/fd/{w}")
    os.close(r)
    os.close(w)
    try:
        out.write(lines_of(7))
        assert (out.dropped, out.backlog()) == (7, 0)
    finally:
        out.close()


def test_reopen_writes_to_the_new_file_after_a_rename(tmp_path: Path) -> None:
    """logrotate renames the file, then SIGHUP: later lines go to a fresh file of that name."""
    path = tmp_path / "access.log"
    logging = AccessLogging(LoggingSpec(access_file=str(path)))
    for i in range(3):
        one(logging.log, i)
    path.rename(tmp_path / "access.log.1")
    logging.reopen()  # flushes the first three into the renamed file
    for i in range(3, 5):
        one(logging.log, i)
    logging.close()
    old = [
        json.loads(x)["request_id"]
        for x in (tmp_path / "access.log.1").read_text().split("\n")
        if x
    ]
    new = [json.loads(x)["request_id"] for x in path.read_text().splitlines()]
    assert (old, new) == (["req-0", "req-1", "req-2"], ["req-3", "req-4"])


def test_a_reload_moves_the_log_to_a_new_file_and_keeps_the_old_on_failure(
    tmp_path: Path,
) -> None:
    """A new access_file takes the next lines; one that cannot be opened changes nothing."""
    first, second = tmp_path / "a.log", tmp_path / "b.log"
    logging = AccessLogging(LoggingSpec(access_file=str(first)))
    one(logging.log, 0)
    logging.apply(LoggingSpec(access_file=str(second)))
    one(logging.log, 1)
    logging.apply(LoggingSpec(access_file=str(tmp_path / "no" / "c.log")))
    one(logging.log, 2)
    logging.close()
    ids = [
        [json.loads(x)["request_id"] for x in p.read_text().splitlines()] for p in (first, second)
    ]
    assert ids == [["req-0"], ["req-1", "req-2"]]


def test_an_unopenable_file_is_a_clear_error(tmp_path: Path) -> None:
    """The error names the path and why."""
    with pytest.raises(LogFileError, match=r"cannot open .*/missing/a\.log: No such file"):
        LogFile(str(tmp_path / "missing" / "a.log"))


def test_metrics_lines_count_made_and_dropped(small_pipe: tuple[int, int]) -> None:
    """/metrics gets router_access_log_lines_total and router_access_log_dropped_total."""
    _, w = small_pipe
    logging = AccessLogging(LoggingSpec(access_file=f"/proc/self/fd/{w}"))
    logging.file.max_backlog = 1024
    for i in range(200):
        one(logging.log, i)
    logging.log.flush()
    text = "\n".join(logging.metric_lines())
    dropped = logging.file.dropped
    logging.close()
    samples = dict(line.split(" ") for line in text.splitlines() if not line.startswith("#"))
    assert float(samples["router_access_log_lines_total"]) == 200
    assert float(samples["router_access_log_dropped_total"]) == dropped > 0
