"""The `router` command: load the config, start every part, stop them in order.

Start order: probes listener -> state store -> live snapshot -> data plane
pools -> config watcher -> metrics flusher -> admin API -> data listener (last,
so the first request finds everything ready; /readyz says 200 from then on).

SIGTERM (Kubernetes, systemd, `podman stop`): /readyz answers 503 at once;
the data listener keeps accepting and serving for `shutdown.delay` while load
balancers stop sending (each connection is closed after its next answer, so
keep-alive clients reconnect elsewhere); then it stops accepting, in-flight
requests get up to `limits.drain_timeout` (a request whose head has begun to
arrive is read and answered, with `Connection: close`; what is still
unanswered then gets a 503); then the background tasks stop, metrics are
flushed one last time, the store is closed and the process exits 0. SIGINT
(Ctrl-C) or a second signal skips what is left of the delay.

`--workers N` forks N processes that share the data port through SO_REUSEPORT;
they act as one router through the state store, so N > 1 needs `state.url`.
Only worker 0 serves the admin API and the probes (one port, one answer); its
/metrics adds the other workers' request counts, which they leave in a
directory made for the run (router/ops/workers.py). router/ops/supervisor.py restarts
a worker that dies.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace

import structlog
import uvloop

from router import native
from router.config.pod import state_url
from router.config.reader import _STATE_SCHEMES, load_file
from router.config.spec import Config
from router.core.confkit import ConfigError
from router.ops.supervisor import Supervisor
from router.wiring import Parts

log = structlog.get_logger("router")


GIL_TURN = 0.0005  # seconds a thread holds the GIL while another waits


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="router",
        description="Serve the deploy-router reverse proxy described by a config file.",
    )
    parser.add_argument("--config", "-c", default="config.yaml", help="YAML config (hot reloaded)")
    parser.add_argument(
        "--workers", "-w", type=int, default=1, help="processes sharing the port (needs Redis)"
    )
    parser.add_argument("--version", action="version", version=version_line())
    return parser.parse_args(argv)


def version_line() -> str:
    """`router 0.1.0 (data plane compiled)`: what was installed, and how it runs."""
    return f"router {native.installed_version()} (data plane {native.data_plane()})"


async def serve(
    config_path: str,
    worker: int,
    workers: int,
    workers_dir: str | None = None,
    config: Config | None = None,
) -> None:
    """Run one router process until SIGTERM or SIGINT; `config`: the file, already read."""
    if config is None:  # a worker reads the file as it is when it starts (or restarts)
        config = load_config(config_path)
    # A reload parses in a worker thread (router/config/reload.py). Each time the loop
    # gives up the GIL (at every poll), it waits until the other thread's turn ends:
    # 5 ms by default, several times per request while a 10,000-route file is read.
    sys.setswitchinterval(GIL_TURN)
    parts = Parts(
        config_path, config, worker=worker, reuse_port=workers > 1, workers_dir=workers_dir
    )
    stop = asyncio.Event()
    hurry = asyncio.Event()  # skip what is left of shutdown.delay

    def on_signal(sig: signal.Signals) -> None:
        parts.runtime.stopping = True  # /readyz answers 503 from this moment
        if sig == signal.SIGINT or stop.is_set():
            hurry.set()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await parts.start()
    try:
        await stop.wait()
    finally:
        await parts.stop(hurry)


def load_config(path: str) -> Config:
    """The config file, with `state.url_file` read (raises ConfigError)."""
    config = load_file(path)
    url = state_url(config.state, _STATE_SCHEMES)
    return replace(config, state=replace(config.state, url=url))


def _run_one(
    config_path: str,
    worker: int,
    workers: int,
    workers_dir: str | None = None,
    config: Config | None = None,
) -> None:
    uvloop.run(serve(config_path, worker, workers, workers_dir, config))


def _supervise(config_path: str, workers: int) -> int:
    """Fork the workers, restart any that dies, forward signals, exit when all have."""
    # where the workers leave their request counts for worker 0's /metrics
    workers_dir = tempfile.mkdtemp(prefix="router-workers-")

    def run(worker: int) -> None:
        _run_one(config_path, worker, workers, workers_dir)

    try:
        return Supervisor(run, workers, workers_dir).run()
    finally:
        shutil.rmtree(workers_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        config = load_config(args.config)
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
        _run_one(args.config, 0, 1, config=config)  # a 10,000-route file is read once
        return
    sys.exit(_supervise(args.config, args.workers))
