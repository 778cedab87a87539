"""`router --workers N`: fork the workers, restart one that dies, stop them together.

The supervisor is the parent of N worker processes sharing the data port (and,
in a container, PID 1). It forwards SIGTERM and SIGINT to every worker and
returns once all of them have exited: 0 when each stopped cleanly.

A worker that exits while no stop was asked for (the OOM killer, a crash, a
stray `kill -9`) is reaped at once and started again with the same index —
worker 0 serves the admin API and the probes, so it must come back. Its last
request counts stay in /metrics (router/ops/workers.py retires its snapshot). A
worker that keeps dying young is restarted after a pause that doubles from
0.1 s up to 5 s, so that one that cannot start does not spin the CPU; the
liveness probe (worker 0's) decides whether the pod should be restarted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

import structlog

from router.ops.workers import WorkerCounters

log = structlog.get_logger("router")

YOUNG = 10.0  # a worker that dies sooner than this after its start died young
FIRST_PAUSE = 0.1
MAX_PAUSE = 5.0


def exit_code(wait_status: int) -> int:
    """A child's exit code as a shell shows it (killed by signal N: 128 + N)."""
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code


class Supervisor:
    def __init__(self, run: Callable[[int], None], workers: int, directory: str) -> None:
        self.run_worker = run  # runs worker i in the child; returns when it has stopped
        self.workers = workers
        self.directory = directory
        self.children: dict[int, int] = {}  # pid -> worker index
        self.started: dict[int, float] = {}  # worker index -> monotonic start
        self.young_deaths: dict[int, int] = {}
        self.stopping = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        signal.signal(signal.SIGHUP, self._forward)  # logrotate: each worker reopens its log
        for index in range(self.workers):
            self._start(index)
        status = 0
        while self.children:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            if pid not in self.children:
                continue  # not a worker: as PID 1 we reap whatever is orphaned to us
            index, code = self.children.pop(pid), exit_code(wait_status)
            if self.stopping:
                status = status or code
            else:
                self._restart(index, pid, code)
        return status

    def _start(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: never run the supervisor's code or handlers
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            # a logrotate SIGHUP before the worker's own handler is up must not kill it
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            code = 0
            try:
                self.run_worker(index)
            except BaseException:  # a crashed worker must not return into the parent's loop
                code = 1
            os._exit(code)
        self.children[pid] = index
        self.started[index] = time.monotonic()

    def _restart(self, index: int, pid: int, code: int) -> None:
        WorkerCounters.retire(self.directory, index, pid)
        lived = time.monotonic() - self.started.get(index, 0.0)
        young = self.young_deaths[index] = (
            self.young_deaths.get(index, 0) + 1 if lived < YOUNG else 0
        )
        pause = 0.0 if not young else min(MAX_PAUSE, FIRST_PAUSE * 2 ** (young - 1))
        log.warning("worker died, restarting", worker=index, pid=pid, code=code, pause=pause)
        time.sleep(pause)  # a stop signal during it sets self.stopping
        if not self.stopping:
            self._start(index)

    def _forward(self, signum: int, _frame: object) -> None:
        if signum != signal.SIGHUP:  # SIGHUP only reopens logs
            self.stopping = True
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
