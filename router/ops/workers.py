"""`router --workers N`: one /metrics for the N processes.

Only worker 0 serves the admin API, but every worker answers requests and
counts its own. So each worker writes a snapshot of its cumulative request
counts, and the text of its other per-process figures (mirrors, failures,
comparisons, ...: router/ops/telemetry.py `local_lines`), to a directory the
supervisor made for this run (once a second and when it stops; written to a
temporary name and renamed, so a reader never sees half a file), and worker
0's /metrics adds the other workers' latest snapshots to its own counts
(the text by router/ops/exposition.py `merge`). The other workers' figures are
therefore up to a second old, well inside any Prometheus scrape interval;
`router_metrics_workers` says how many processes the figures include.

A worker that dies is restarted by the supervisor (router/ops/supervisor.py),
which first renames its last snapshot `retired-WORKER-PID.json`: its requests
stay in the sums (the counters never go backwards), but it no longer counts as
a live worker in `router_metrics_workers`.

Nothing here is on the request path: snapshots are taken by a background task.
Rollout decisions never read these files; they use the per-window counters
every worker flushes to the state store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from router.dataplane.metrics import Metrics, Snapshot

log = structlog.get_logger("router.ops.workers")

SNAPSHOT_INTERVAL = 1.0


class WorkerCounters:
    """Writes this worker's snapshots; reads the other workers' (worker 0 only)."""

    def __init__(
        self, directory: str, worker: int, metrics: Metrics, interval: float = SNAPSHOT_INTERVAL
    ) -> None:
        self.directory = Path(directory)
        self.worker = worker
        self.metrics = metrics
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._live = 1
        self.local: Callable[[], str] | None = None  # this worker's per-process text
        self._peer_local: list[tuple[bool, str]] = []
        if worker == 0:
            metrics.peers = self.peers
            metrics.live_workers = self.live

    def path(self, worker: int) -> Path:
        return self.directory / f"worker-{worker}.json"

    def write(self) -> None:
        """Replace this worker's snapshot file atomically."""
        final = self.path(self.worker)
        temp = final.with_suffix(".tmp")
        body: dict[str, Any] = {"slots": self.metrics.snapshot()}
        if self.local is not None:
            body["local"] = self.local()
        temp.write_text(json.dumps(body))
        os.replace(temp, final)

    def live(self) -> int:
        """This worker and every other live one that reported at the last `peers()`
        (which /metrics calls first)."""
        return self._live

    def peers(self) -> list[Snapshot]:
        """The latest snapshot of every other worker, and the last of each dead one."""
        out: list[Snapshot] = []
        local: list[tuple[bool, str]] = []
        live = 1
        for path in sorted(self.directory.glob("*.json")):
            retired = path.name.startswith("retired-")
            if path == self.path(self.worker) or not (retired or path.name.startswith("worker-")):
                continue
            try:
                snap = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # gone, or unreadable: counted as not reporting
            if isinstance(snap, dict) and isinstance(snap.get("slots"), list):
                out.append(snap["slots"])
                if isinstance(text := snap.get("local"), str):
                    local.append((not retired, text))
                live += not retired
        self._live = live
        self._peer_local = local
        return out

    def peer_local(self) -> list[tuple[bool, str]]:
        """(live?, per-process text) of every other worker, as of the last `peers()`."""
        return self._peer_local

    @staticmethod
    def retire(directory: str, worker: int, pid: int) -> None:
        """A dead worker's snapshot: still summed, no longer a live worker (supervisor)."""
        path = Path(directory) / f"worker-{worker}.json"
        with contextlib.suppress(FileNotFoundError):  # died before its first snapshot
            os.replace(path, path.with_name(f"retired-{worker}-{pid}.json"))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="worker-counters")

    async def stop(self) -> None:
        """Stop the task and write a last snapshot (the counts of the final requests)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._write_logged()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self._write_logged()

    def _write_logged(self) -> None:
        try:
            self.write()
        except OSError as exc:  # a full disk must not stop the worker
            log.warning("worker_counters_write_failed", error=str(exc), path=str(self.directory))
