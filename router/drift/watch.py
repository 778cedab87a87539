"""The I/O side of drift: bodies off the request path, counts through the store.

Theory of operation.

*Request path.* For a route with a `drift:` block the exchange asks the
`DriftSink` for a `Tap` when it activates. A tap keeps the raw request body
and the answer's body (each up to TAP_MAX_BODY; a larger one is simply not
observed) and, when the exchange records, appends ONE tuple to the sink's
pending list. Nothing is parsed there. When `MAX_PENDING` items wait for the
next pass (high load) `tap()` returns None: at most ~5,000 requests a second
are observed, a sample that is plenty for binned statistics, and above that
rate a request pays one length test. Requests sampled out are counted
(`router_drift_dropped_total`).

*Background pass* (every PASS_INTERVAL, ~100 ms, in chunks of PASS_CHUNK with
a yield to the loop between them so requests never queue behind it): json-parse each body,
extract the configured paths and hand the values to the route's streams: the
input stream (one tracker per route) and the output stream (one tracker per
backend, 2xx answers only). Until a stream has its reference, values go to its
collection of the first `reference` observations; then the bins are fitted
(router/core/drift.py) with each feature's kind read from the values (a list is a
vector, a number a number, anything else a category).

*Replicas* (every SYNC_INTERVAL, ~1 s): every replica must bin the same way,
so the fitted reference goes to the store as a one-item sample list
(`drift-ref-in` / `drift-ref-out`, cap 1). A replica adopts whatever reference
the store holds; the first to finish collecting publishes (if two race, the
last write wins and the other adopts it on its next sync). A stored reference
that disappears means `routerctl drift ROUTE --reset-reference` ran: every
replica goes back to collecting. Counts are counter hashes named with the
reference's id so counts binned under different references never add up:

    din:<ref>:<slot>               input bins, one hash per window slot
    dout:<ref>:<backend>:<slot>    output bins per backend
    pd:<step window>:<ref>:<backend>   output bins of a canary step (the gate)

*Scores and alarms* are read from the store's sums (every replica's counts),
so `routerctl drift` and /metrics agree across replicas. A feature entering
or leaving alarm is logged and, on the controller's leader only (one entry,
not one per replica), written to the route's history.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from aiohttp import web

from router.config.spec import Config
from router.core.drift import Reference, counter_fields, counts_from_fields
from router.core.drift_scores import FeatureScore, scores
from router.dataplane.metric_text import metric_lines
from router.drift.streams import DriftSink, Item, RouteDrift, Stream, ref_id
from router.ops.admin import Refusal
from router.state.base import StateStore, StoreUnavailable

log = structlog.get_logger("router.core.drift")

PASS_CHUNK = 64  # items parsed between yields to the loop (keeps p99 flat)
PASS_INTERVAL = 0.1
SYNC_INTERVAL = 1.0
REF_TTL = 30 * 24 * 3600.0
STEP_TTL = 24 * 3600.0

# rid, route, backend, one prediction per item (the first output's values), the
# rollout window served in, the role of an answer nobody was served ("": served)
Remember = Callable[[str, str, str, tuple[object, ...], str | None, str], None]


def ref_kind(stream_kind: str) -> str:
    return f"drift-ref-{stream_kind}"


async def stored_reference(store: StateStore, route: str, kind: str) -> Reference | None:
    items = await store.samples(route, ref_kind(kind), 1)
    return Reference.from_json(items[0]) if items else None


async def read_counts(
    store: StateStore, route: str, stream: Stream, key: str, now: float
) -> dict[str, list[int]]:
    """Bins summed over the window from every replica; key "" inputs, else a backend."""
    if stream.reference is None:
        return {}
    mid = f"{key}:" if key else ""
    prefix = "din" if stream.kind == "in" else "dout"
    names = [f"{prefix}:{stream.rid}:{mid}{slot}" for slot in stream.window.slot_ids(now)]
    hashes = await store.read_counters(route, names)
    return counts_from_fields(stream.reference, hashes.values())


async def prediction_counts(
    store: StateStore, route: str, window: str, candidate: str, stable: str
) -> dict[str, Any]:
    """The gate's input: output bins of both arms over one canary step ({} if none)."""
    reference = await stored_reference(store, route, "out")
    if reference is None:
        return {}
    rid = ref_id(reference)
    names = {b: f"pd:{window}:{rid}:{b}" for b in (candidate, stable)}
    hashes = await store.read_counters(route, list(names.values()))
    arms = {b: counts_from_fields(reference, [hashes[n]]) for b, n in names.items()}
    return {"candidate": arms[candidate], "stable": arms[stable]}


class DriftIO:
    """The background passes and the figures; one per router process."""

    def __init__(
        self,
        store: StateStore,
        step_window: Callable[[str], str | None],
        is_leader: Callable[[], bool],
        remember: Remember | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.sink = DriftSink()
        self.step_window = step_window
        self.is_leader = is_leader
        self.remember = remember
        self.clock = clock
        self.routes: dict[str, RouteDrift] = {}
        self.observed = 0
        self._tasks: list[asyncio.Task[None]] = []
        # (route, backend) -> role, for the `role` label of the output series (router/ops/roles.py)
        self.role_of: Callable[[str, str], str] = _no_role

    # -- config ----------------------------------------------------------------
    def apply_config(self, config: Config) -> None:
        """Keep a route's streams while its drift block is unchanged."""
        now, old = self.clock(), self.routes
        routes: dict[str, RouteDrift] = {}
        for r in config.routes:
            if r.drift is None:
                continue
            kept = old.get(r.name)
            same = kept is not None and (kept.spec, kept.protocol.word) == (r.drift, r.protocol)
            try:
                routes[r.name] = (
                    kept
                    if kept is not None and same
                    else RouteDrift(r.name, r.drift, now, r.protocol)
                )
            except (OSError, ValueError) as exc:  # a bad reference_file: the route goes unwatched
                log.error("drift reference file unreadable", route=r.name, error=str(exc))
        self.routes = routes

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(PASS_INTERVAL, self.run_pass), name="drift-pass"),
            asyncio.create_task(self._every(SYNC_INTERVAL, self.sync), name="drift-sync"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _every(self, interval: float, body: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                result = body()
                if asyncio.iscoroutine(result):
                    await result
            except StoreUnavailable as exc:
                log.warning("drift: state store unreachable", error=str(exc))
            except Exception:  # never die: the next pass tries again
                log.exception("drift pass failed")

    # -- the background pass -------------------------------------------------------
    async def run_pass(self) -> None:
        """Parse and observe every pending item, yielding to the loop between chunks."""
        items = self.sink.take()
        for start in range(0, len(items), PASS_CHUNK):
            if start:
                await asyncio.sleep(0)
            self.observe_items(items[start : start + PASS_CHUNK])

    def observe_items(self, items: Sequence[Item]) -> None:
        """Every row of every request and answer (the route's protocol reads them)."""
        now = self.clock()
        for route, backend, rid, status, method, target, req, ans in items:
            rd = self.routes.get(route)
            if rd is None or not rd.protocol.inference(method, target):
                continue  # not observed: a metadata or health call of a model server
            self.observed += 1
            if rd.inputs is not None and req is not None:
                rd.inputs.now = now
                for row in rd.inputs.rows(req):
                    rd.inputs.observe("", row)
            if rd.outputs is not None and ans is not None and 200 <= status < 300:
                rd.outputs.now = now
                rows = rd.outputs.rows(ans)
                for row in rows:
                    rd.outputs.observe(backend, row)
                if self.remember is not None and rows:
                    window = self.step_window(route)
                    self.remember(rid, route, backend, tuple(row[0] for row in rows), window, "")

    def remember_answer(self, route: str, backend: str, role: str, rid: str, body: bytes) -> None:
        """A mirrored or held answer (router/shadow/mirror.py): remembered for delayed labels
        as the arm `backend~role`, never counted in the drift bins."""
        rd = self.routes.get(route)
        if self.remember is None or rd is None or rd.outputs is None:
            return
        rows = rd.outputs.rows(body)
        if rows:
            window = self.step_window(route)
            self.remember(rid, route, backend, tuple(row[0] for row in rows), window, role)

    # -- the sync with the store ---------------------------------------------------
    async def sync(self) -> None:
        now = self.clock()
        for rd in list(self.routes.values()):
            for stream in rd.streams():
                await self._sync_reference(rd.route, stream)
                await self._push(rd.route, stream, now)
            await self._judge(rd, now)

    async def _sync_reference(self, route: str, stream: Stream) -> None:
        items = await self.store.samples(route, ref_kind(stream.kind), 1)
        if items:
            stored = Reference.from_json(items[0])
            if ref_id(stored) != stream.rid:
                stream.install(stored, published=True)
                log.info("drift reference adopted", route=route, stream=stream.kind)
            stream.published = True
        elif stream.reference is not None and stream.published:
            self._restart(route, stream)  # somebody reset it
        elif stream.reference is not None:
            text = stream.reference.to_json()
            await self.store.push_sample(route, ref_kind(stream.kind), text, 1, REF_TTL)
            stream.published = True
            log.info("drift reference fitted", route=route, stream=stream.kind, id=stream.rid)

    def _restart(self, route: str, stream: Stream) -> None:
        rd = self.routes.get(route)
        stream.install(None, published=False)
        if stream.kind == "in" and rd is not None and rd.spec.reference_file:
            stream.fit_file(rd.spec.reference_file)
        log.info("drift reference reset; collecting", route=route, stream=stream.kind)

    async def _push(self, route: str, stream: Stream, now: float) -> None:
        counters: dict[str, dict[str, int]] = {}
        window = self.step_window(route) if stream.kind == "out" else None
        for key, tracker in stream.trackers.items():
            tracker.advance(now)
            for slot, counts in tracker.drain().items():
                mid = f"{key}:" if key else ""
                prefix = "din" if stream.kind == "in" else "dout"
                counters[f"{prefix}:{stream.rid}:{mid}{slot}"] = counter_fields(counts)
                if window is not None:
                    step = counters.setdefault(f"pd:{window}:{stream.rid}:{key}", {})
                    for field, n in counter_fields(counts).items():
                        step[field] = step.get(field, 0) + n
        if counters:
            ttl = max(stream.spec.window * 2, STEP_TTL if window else 0.0) + 60
            await self.store.add_counters(route, counters, ttl)

    # -- scores ------------------------------------------------------------------
    async def figures(self, route: str) -> dict[str, Any] | None:
        """Scores of every stream from every replica's counts; None: no drift on route."""
        rd = self.routes.get(route)
        if rd is None:
            return None
        now, spec = self.clock(), rd.spec
        out: dict[str, Any] = {"route": route, "threshold": spec.threshold, "window": spec.window}
        out["min_samples"] = spec.min_samples
        out["streams"] = [await self._stream_figures(rd, s, now) for s in rd.streams()]
        return out

    async def _stream_figures(self, rd: RouteDrift, stream: Stream, now: float) -> dict[str, Any]:
        spec = rd.spec
        entry: dict[str, Any] = {"stream": "inputs" if stream.kind == "in" else "outputs"}
        entry["reference"] = _ref_state(stream)
        keys = [""] if stream.kind == "in" else sorted(stream.trackers)
        entry["series"] = []
        for key in keys:
            counts = await read_counts(self.store, rd.route, stream, key, now)
            found = (
                scores(stream.reference, counts, spec.threshold, spec.min_samples)
                if stream.reference
                else []
            )
            label = key or "inputs"
            rd.last[label] = found
            entry["series"].append({"backend": key or None, "features": [_score(s) for s in found]})
        return entry

    async def _judge(self, rd: RouteDrift, now: float) -> None:
        figures = await self.figures(rd.route)
        if figures is None:
            return
        alarms = {
            f"{ser['backend'] or 'inputs'}/{f['name']}": f
            for stream in figures["streams"]
            for ser in stream["series"]
            for f in ser["features"]
            if f["alarm"]
        }
        for name in sorted(alarms.keys() - rd.alarms):
            await self._announce(rd.route, "drift_alarm", name, alarms[name])
        for name in sorted(rd.alarms - alarms.keys()):
            await self._announce(rd.route, "drift_cleared", name, None)
        rd.alarms = set(alarms)

    async def _announce(
        self, route: str, event: str, name: str, f: Mapping[str, Any] | None
    ) -> None:
        figures = {"psi": f["psi"], "n": f["n"], "threshold": f["threshold"]} if f else {}
        (log.warning if f else log.info)(event, route=route, feature=name, **figures)
        if self.is_leader():
            words = (  # what `routerctl history` prints: the feature and its figures
                f"{name}: PSI {f['psi']:.3f} >= {f['threshold']:g} over {f['n']} rows in the window"
                if f
                else f"{name}: back under the threshold"
            )
            entry = {"event": event, "feature": name, "actor": "drift", "reason": words, **figures}
            with contextlib.suppress(StoreUnavailable):
                await self.store.add_history(route, entry)

    async def reset(self, route: str) -> tuple[int, dict[str, Any]]:
        """Drop the stored references: every replica collects a new one."""
        rd = self.routes.get(route)
        if rd is None:
            return 409, {"error": f"route {route!r} has no drift block"}
        for stream in rd.streams():
            await self.store.clear_samples(route, ref_kind(stream.kind))
            self._restart(route, stream)
        await self.store.add_history(route, {"event": "drift_reset", "actor": "routerctl"})
        return 200, {"message": f"collecting a new reference of {rd.spec.reference} requests"}

    # -- admin API and Prometheus (router/ops/admin.py AdminExtension) -------------------
    def install(self, app: web.Application, refusal: Refusal) -> None:
        """GET /v1/routes/NAME/drift; POST /v1/routes/NAME/drift/reset (token)."""

        async def show(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            found = await self.figures(name)
            if found is None:
                return web.json_response(
                    {"error": f"route {name!r} has no drift block"}, status=404
                )
            return web.json_response(found)

        async def reset(request: web.Request) -> web.Response:
            if (refused := refusal(request)) is not None:
                return refused
            status, body = await self.reset(request.match_info["name"])
            return web.json_response(body, status=status)

        app.router.add_get("/v1/routes/{name}/drift", show)
        app.router.add_post("/v1/routes/{name}/drift/reset", reset)

    def metric_lines(self) -> list[str]:
        """Gauges from the latest scores of each route (refreshed every sync). A feature
        with no value in the current window has its sample count (0) and no score: a 0
        would read as "no drift"."""
        fams: dict[str, list[tuple[dict[str, str], float]]] = {k: [] for k in _DRIFT_HELP}
        for rd in self.routes.values():
            for label, found in rd.last.items():
                role = "input" if label == "inputs" else self.role_of(rd.route, label)
                for s in found:
                    labels = {"route": rd.route, "series": label, "role": role, "feature": s.name}
                    fams["router_drift_samples"].append((labels, float(s.n)))
                    fams["router_drift_threshold"].append((labels, s.threshold))
                    if not s.n:
                        continue
                    fams["router_drift_psi"].append((labels, s.psi))
                    fams["router_drift_js_distance"].append((labels, s.js))
                    if s.ks is not None:
                        fams["router_drift_ks"].append((labels, s.ks))
                    fams["router_drift_alarm"].append((labels, float(s.alarm)))
        lines = [x for name, rows in fams.items() for x in _gauge(name, rows)]
        dropped: list[tuple[dict[str, str], float]] = [({}, float(self.sink.dropped))]
        return [
            *lines,
            *metric_lines(
                "router_drift_dropped_total",
                "counter",
                "Requests of drift routes not observed (sampled out under load).",
                dropped,
            ),
        ]


_DRIFT_HELP = {
    "router_drift_psi": "PSI of the current window vs its reference (absent: no sample yet).",
    "router_drift_js_distance": "Jensen-Shannon distance of the current window vs its reference.",
    "router_drift_ks": "Kolmogorov-Smirnov statistic of a numeric feature vs its reference.",
    "router_drift_alarm": "1 while a feature alarms (PSI >= threshold on min_samples or more).",
    "router_drift_samples": "Values of a feature in the current window (every replica's).",
    "router_drift_threshold": "The PSI a feature alarms at.",
}


def _gauge(name: str, rows: list[tuple[dict[str, str], float]]) -> list[str]:
    return metric_lines(name, "gauge", _DRIFT_HELP[name], rows)


def _no_role(route: str, backend: str) -> str:
    return ""


def _ref_state(stream: Stream) -> dict[str, Any]:
    if stream.reference is None:
        return {"state": "collecting", "have": len(stream.samples), "need": stream.spec.reference}
    return {"state": "fitted", "id": stream.rid, "features": stream.reference.names()}


def _score(s: FeatureScore) -> dict[str, Any]:
    return {
        "name": s.name,
        "psi": round(s.psi, 5),
        "js": round(s.js, 5),
        "ks": None if s.ks is None else round(s.ks, 5),
        "n": s.n,
        "threshold": s.threshold,
        "alarm": s.alarm,
    }
