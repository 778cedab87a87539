"""Every long-lived part of one router process, wired together.

`Parts` owns the objects and their order; each part owns its own task. A hot
reload goes through `apply_config`: the new routing table is built first (a
strategy that fails to build leaves the old config serving), then the runtime
swaps its references and the data plane adjusts its pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from typing import Any

import structlog
from aiohttp import web

from router import native
from router.capture.writer import Capture
from router.config.reader import parse
from router.config.reload import ConfigWatcher, diff_summary
from router.config.spec import Config
from router.control.automation import AutomationController
from router.control.base import Writer, counted_window
from router.control.bluegreen import BlueGreenController
from router.control.canary import CanaryController
from router.control.controller import Controller, KindController
from router.core.confkit import ConfigError
from router.core.rollout import Rollout
from router.dataplane.metrics import Metrics, MetricsFlusher
from router.dataplane.plane import DataPlane
from router.dataplane.routing import RouteTable, build_table
from router.drift.concept_watch import ConceptIO
from router.drift.labels import Feedback
from router.drift.watch import DriftIO
from router.ops.admin import build_admin_app
from router.ops.auth import Access, TokenError, load_tokens
from router.ops.logfile import AccessLogging, LogFileError
from router.ops.logs import configure_logging
from router.ops.probes import Probes
from router.ops.rollout_metrics import RolloutFigures
from router.ops.telemetry import Telemetry
from router.ops.workers import WorkerCounters
from router.runtime import Runtime
from router.shadow.mirror import Mirrors
from router.shadow.streams import StreamMetrics
from router.state.factory import open_store
from router.state.lease import Leadership, default_holder
from router.state.live import LiveState

log = structlog.get_logger("router")


class Parts:
    def __init__(
        self,
        config_path: str,
        config: Config,
        *,
        worker: int,
        reuse_port: bool,
        workers_dir: str | None = None,
    ) -> None:
        configure_logging(config.logging.level)
        self.worker = worker
        self.reuse_port = reuse_port
        self.runtime = Runtime(config=config, table=build_table(config), config_path=config_path)
        self.runtime.store_kind = "redis" if config.state.url else "memory"
        self.store = open_store(config.state.url)
        self.metrics = Metrics()
        self.access = _access_logging(config)
        self.metrics.add_collector(self.access.metric_lines)
        self.dataplane = DataPlane(self.runtime, self.metrics)
        self.dataplane.access = self.access.active()
        self.mirrors = Mirrors(self.runtime, self.store)
        self.dataplane.shadow_sink = self.mirrors
        self.live = LiveState(
            self.store,
            routes=self._route_names,
            poll_interval=config.state.poll_interval,
            on_health=self._store_health,
            on_change=self._rollout_changed,
            holder=default_holder(),
        )
        self.watcher = ConfigWatcher(
            config_path,
            self._reloaded,
            self._reload_failed,
            prepare=lambda data, source: prepare(data, source, self.runtime.config),
            current_hash=config.source_hash,
        )
        self.runtime.store_notes = self._store_notes
        self.flusher = MetricsFlusher(self.metrics, self.store)
        # --workers N: worker 0's /metrics adds the others' counts (router/ops/workers.py)
        self.worker_counters = (
            WorkerCounters(workers_dir, worker, self.metrics) if workers_dir else None
        )
        self.controller = self._build_controller(config)
        # stream timing per arm (router/shadow/streams.py): the client's and shadows' answers
        self.streams = StreamMetrics(
            self.runtime, self.store, step_window=lambda route: self.metrics.step_window(route)
        )
        self.dataplane.stream_sink = self.streams
        self.mirrors.streams = self.streams
        self.admin_runner: web.AppRunner | None = None
        self.admin_access = _access(config)  # tokens read once, at start
        # drift and delayed labels (router/drift/watch.py, router/drift/labels.py)
        self.feedback = Feedback(self.store)
        self.drift = DriftIO(
            self.store,
            step_window=lambda route: self.metrics.step_window(route),
            is_leader=lambda: self.controller.leadership.is_leader,
            remember=self.feedback.remember,
        )
        self.drift.apply_config(config)
        self.dataplane.drift_sink = self.drift.sink
        self.mirrors.answered = self.drift.remember_answer  # mirrored answers get labels too
        self.concept = ConceptIO(
            self.runtime, self.store, is_leader=lambda: self.controller.leadership.is_leader
        )
        self.feedback.tests = self.concept.figures
        # payload capture (router/capture/): the data plane's tap, the shadows' answers, labels
        self.capture = Capture(self.runtime)
        self.dataplane.capture_sink = self.capture.sink
        self.mirrors.capture = self.capture.shadow_answer
        self.feedback.on_labels = self.capture.labels
        self.telemetry = self._build_telemetry()
        # the kubelet's and Prometheus's listener (router/ops/probes.py); worker 0's, like admin
        spec = config.probes
        page = self.telemetry.page
        self.probes = Probes(spec, self.runtime, page) if spec and worker == 0 else None

    def _build_telemetry(self) -> Telemetry:
        """/metrics (router/ops/telemetry.py); the rollouts' verdicts are read from the
        store in the background by the worker that serves it."""
        self.figures = RolloutFigures(self.runtime, self.store) if self.worker == 0 else None
        telemetry = Telemetry(
            self.runtime,
            self.metrics,
            extensions=self._extensions(),
            plane=self.dataplane,
            mirrors=self.mirrors,
            feedback=self.feedback,
            figures=self.figures,
            is_leader=lambda: self.controller.leadership.is_leader,
        )
        self.writer.on_written = telemetry.count_transitions
        self.drift.role_of = self.streams.role_of = telemetry.roles.role
        if self.worker_counters is not None:
            self.worker_counters.local = lambda: "\n".join(telemetry.local_lines()) + "\n"
            if self.worker == 0:
                telemetry.peers = self.worker_counters
        return telemetry

    def _build_controller(self, config: Config) -> Controller:
        lease = Leadership(
            self.store, "controller", holder=self.live.holder, ttl=config.controller.lease_ttl
        )
        writer = self.writer = Writer(self.store, self.live, actor=f"controller@{lease.holder}")
        canary = CanaryController(self.store, self.live, self.metrics, writer)
        bluegreen = BlueGreenController(self.runtime, self.store, self.live, self.metrics, writer)
        # every kind's judged period gets a metrics window (a canary's as before)
        self.metrics.step_window = lambda route: counted_window(self.runtime.live.get(route))
        # the model's accuracy alarms (concept drift) step an `advance: auto` ladder down
        self.automation = AutomationController(
            self.store, writer, alarms=lambda route: self.concept.alarms(route)
        )
        kinds: list[KindController] = [canary, bluegreen, self.automation]
        return Controller(self.runtime, self.store, lease, kinds)

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        if self.probes is not None:  # first: a startup probe sees the process while it connects
            await self.probes.start()
        await self.store.start()
        await self.live.start()
        self.runtime.live = self.live.snapshot
        self.dataplane.apply_config(self.runtime.config)
        await self.dataplane.start()
        await self.watcher.start()
        await self.flusher.start()
        if self.worker_counters is not None:
            await self.worker_counters.start()
        await self.controller.start()
        await self.mirrors.start()
        await self.streams.start()
        await self.drift.start()
        await self.feedback.start()
        await self.concept.start()
        if self.figures is not None:
            await self.figures.start()
        await self.capture.start()
        if self.worker == 0:
            await self._start_admin()
        # logrotate renames the access file, then sends SIGHUP: write to a new one
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.access.reopen)
        listen = self.runtime.config.listen
        self.server = await self.dataplane.serve(listen, reuse_port=self.reuse_port)
        self.runtime.serving = True
        gc.freeze()  # modules and config live as long as the process: collections skip them
        log.info(
            "router started",
            pid=os.getpid(),
            worker=self.worker,
            listen=_addr(listen),
            data_plane=native.data_plane(),
        )
        if stale := native.stale():
            log.warning(
                "compiled modules are older than their source: run `make native`", modules=stale
            )

    async def stop(self, hurry: asyncio.Event | None = None) -> None:
        """SIGTERM's order: /readyz 503 -> serve on for shutdown.delay (closing each
        connection after its next answer) -> stop accepting -> drain -> the rest.
        `hurry` (SIGINT, a second signal; None: no delay at all) cuts the delay short."""
        self.runtime.stopping = True
        config = self.runtime.config
        delay = 0.0 if hurry is None or hurry.is_set() else config.shutdown.delay
        drain = config.limits.drain_timeout
        log.info("router stopping", pid=os.getpid(), worker=self.worker, delay=delay, drain=drain)
        if hurry is not None and delay > 0:
            self.dataplane.stop_soon()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hurry.wait(), delay)
        await self.dataplane.shutdown(drain)
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        self.access.close()  # the last requests' lines
        await self.mirrors.stop()
        await self.capture.stop()  # after the mirrors: their last answers are captured too
        await self.streams.stop()
        await self.watcher.stop()
        await self.controller.stop()
        await self.drift.stop()
        await self.feedback.stop()
        await self.concept.stop()
        if self.figures is not None:
            await self.figures.stop()
        await self.live.stop()
        await self.flusher.stop()
        if self.worker_counters is not None:
            await self.worker_counters.stop()
        if self.admin_runner is not None:
            await self.admin_runner.cleanup()
        await self.store.close()
        if self.probes is not None:  # last: readiness says "stopping" to the very end
            await self.probes.stop()
        log.info("router stopped", pid=os.getpid(), worker=self.worker)

    async def _start_admin(self) -> None:
        spec = self.runtime.config.admin
        ctl = self.controller
        app = build_admin_app(
            self.runtime,
            self.metrics,
            self.admin_access,
            actions={verb: ctl.action(verb) for verb in ctl.verbs()},
            extra_status=ctl.explain,
            reload=self.watcher.check_now,
            history=self.store.history,
            shadow=self.mirrors,
            extensions=self._extensions(),
            page=self.telemetry.page,
        )
        self.admin_runner = web.AppRunner(app, access_log=None)
        await self.admin_runner.setup()
        await web.TCPSite(self.admin_runner, spec.host, spec.port).start()

    def _extensions(self) -> list[Any]:
        return [
            self.drift,
            self.feedback,
            self.concept,
            self.automation,
            self.streams,
            self.capture,
        ]

    # -- callbacks ---------------------------------------------------------
    def _reloaded(self, prepared: tuple[Config, RouteTable, list[str]]) -> None:
        self.apply_config(*prepared)

    def apply_config(
        self, config: Config, table: RouteTable | None = None, changes: list[str] | None = None
    ) -> None:
        """Swap in a new config; its table and changes come (off the loop) from a reload."""
        old = self.runtime.config
        if table is None:
            try:
                table = build_table(config)
            except Exception as exc:  # a strategy that cannot build must not take us down
                self._reload_failed(f"building routes failed: {exc}")
                return
        self.runtime.swap_config(config, table)
        if len(config.routes) >= FREEZE_ROUTES:
            # A big config lives until the next reload: keep it out of collections (a full
            # one over 10,000 routes takes 150 ms). The price: cyclic garbage that is
            # pending right now is frozen with it and never freed, a small amount per
            # reload, so small configs (collected in a few ms) are not frozen.
            gc.freeze()
        self.dataplane.apply_config(config)
        self.access.apply(config.logging)
        self.dataplane.access = self.access.active()
        self.mirrors.apply_config(config)
        self.drift.apply_config(config)
        self.capture.apply_config(config)
        if changes is None:
            changes = diff_summary(old, config)
        log.info("config reloaded", hash=config.source_hash, changes=changes)

    def _reload_failed(self, message: str) -> None:
        self.runtime.reload_failed(message)
        log.error("config reload refused; the last good config keeps serving", error=message)

    def _route_names(self) -> list[str]:
        return [r.name for r in self.runtime.config.routes]

    def _store_health(self, ok: bool) -> None:
        self.runtime.store_ok = ok
        log.warning("state store", ok=ok) if not ok else log.info("state store", ok=ok)

    def _store_notes(self) -> dict[str, Any]:
        live = self.live
        return {
            "restoring": sorted(live.restoring),
            "restored": list(live.restored),
            "data_lost_at": live.data_lost_at,
        }

    def _rollout_changed(self, route: str, old: Rollout | None, new: Rollout) -> None:
        self.runtime.live = self.live.snapshot


FREEZE_ROUTES = 1_000


def prepare(data: bytes, source: str, old: Config) -> tuple[Config, RouteTable, list[str]]:
    """A reload's work, in the watcher's thread: parse, build the routing table, and list
    the changes from `old` (every part O(routes): none of it may run on the loop)."""
    # No cyclic garbage collection meanwhile: building 10,000 routes allocates enough to
    # trigger full collections, which hold the GIL (the event loop's too) for 100 ms or
    # more each. What this builds is acyclic; the collector runs again when it is done.
    gc.disable()
    try:
        config = parse(data, source=source)
        try:
            table = build_table(config)
        except Exception as exc:  # a strategy that cannot build must not take the router down
            raise ConfigError([f"{source}: building routes failed: {exc}"]) from exc
        return config, table, diff_summary(old, config)
    finally:
        gc.enable()


def _access_logging(config: Config) -> AccessLogging:
    try:
        return AccessLogging(config.logging)
    except LogFileError as exc:  # like nginx: no start without the log it was told to write
        log.error("logging.access_file cannot be opened", error=str(exc))
        raise SystemExit(2) from exc


def _access(config: Config) -> Access:
    try:
        return Access(load_tokens(config.admin))
    except (TokenError, OSError) as exc:  # no start with a token it was told to use
        log.error("admin token cannot be read", error=str(exc))
        raise SystemExit(2) from exc


def _addr(listen: object) -> str:
    host = getattr(listen, "host", "")
    port = getattr(listen, "port", "")
    return f"{host}:{port}"
