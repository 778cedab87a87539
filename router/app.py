"""The `router` command: load the config, start every part, stop them in order.

Start order: state store -> live snapshot -> data plane pools -> config watcher
-> metrics flusher -> admin API -> data listener (last, so the first request
finds everything ready). Shutdown runs the other way round, uvicorn-style: stop
accepting, drain in-flight requests up to `limits.drain_timeout`, then stop the
background tasks, flush metrics one last time and close the store.

`--workers N` forks N processes that share the data port through SO_REUSEPORT;
they act as one router through the state store, so N > 1 needs `state.url`.
Only worker 0 serves the admin API (one port, one answer); its /metrics adds
the other workers' request counts, which they leave in a directory made for the
run (router/workers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence

import structlog
import uvloop

from router.config import load_file
from router.confkit import ConfigError
from router.parts import Parts

log = structlog.get_logger("router")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="router",
        description="Serve the deploy-router reverse proxy described by a config file.",
    )
    parser.add_argument("--config", "-c", default="config.yaml", help="YAML config (hot reloaded)")
    parser.add_argument(
        "--workers", "-w", type=int, default=1, help="processes sharing the port (needs Redis)"
    )
    return parser.parse_args(argv)


async def serve(
    config_path: str, worker: int, workers: int, workers_dir: str | None = None
) -> None:
    """Run one router process until SIGTERM or SIGINT."""
    config = load_file(config_path)
    parts = Parts(
        config_path, config, worker=worker, reuse_port=workers > 1, workers_dir=workers_dir
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await parts.start()
    try:
        await stop.wait()
    finally:
        await parts.stop()


def _run_one(config_path: str, worker: int, workers: int, workers_dir: str | None = None) -> None:
    uvloop.run(serve(config_path, worker, workers, workers_dir))


def _supervise(config_path: str, workers: int) -> int:
    """Fork the workers, forward signals, and exit when they have all exited."""
    # where the workers leave their request counts for worker 0's /metrics
    workers_dir = tempfile.mkdtemp(prefix="router-workers-")
    try:
        return _fork_and_wait(config_path, workers, workers_dir)
    finally:
        shutil.rmtree(workers_dir, ignore_errors=True)


def _fork_and_wait(config_path: str, workers: int, workers_dir: str) -> int:
    children: list[int] = []
    for worker in range(workers):
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                _run_one(config_path, worker, workers, workers_dir)
            except BaseException:  # a crashed worker must not run the parent's code
                code = 1
            os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)  # logrotate: each worker reopens its access file
    status = 0
    for pid in children:
        _, code = os.waitpid(pid, 0)
        status = status or os.waitstatus_to_exitcode(code)
    return status


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        config = load_file(args.config)
    except ConfigError as exc:
        print(f"router: {args.config} is not valid:", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        sys.exit(2)
    if args.workers < 1:
        sys.exit("router: --workers must be at least 1")
    if args.workers > 1 and config.state.url is None:
        sys.exit(
            "router: --workers > 1 needs a shared state store: set state.url to a redis:// URL "
            "(in-memory state lives in one process, so workers would disagree)"
        )
    if args.workers == 1:
        _run_one(args.config, 0, 1)
        return
    sys.exit(_supervise(args.config, args.workers))
