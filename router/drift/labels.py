"""Delayed labels: which backend answered what, and how often it was right.

Theory of operation.

*Remembering.* The drift background pass (router/drift/watch.py) reads the
answers of routes with `drift.outputs` as items (router/core/protocols/); for each
2xx answer it calls `remember(request_id, route, arm, predictions, window)`,
one prediction per item (row of the batch): the values of the FIRST output.
The *arm* is the backend that answered the client; answers nobody was served
are arms too, `backend~role` (router/drift/label_items.py `arm_name`): a shadow's
or a canary candidate's mirrored answer (`~mirror`, told by router/shadow/mirror.py),
and on an automation route the model's answer the human was asked after
(`~assist`, `~deferred`). So every arm is scored on the same labels: at
partial the model's confident answers are the served `model` arm and the ones
it deferred `model~deferred`. `window` is the rollout window the request was
served in (a canary step, an automation level: router/control/base.py
`window_id`). A `Memory` keeps these in insertion order, bounded by count
(`max_entries`, 100k) and age (`ttl`, 1 h): the oldest go first. It lives in
the memory of the replica that served the request.

*Replicas.* A label may reach any replica's admin port (with `--workers N`
only worker 0 has one), not the replica that served the request. Rather than
copy every (request id, answer) into the store, which costs a store write per
request, the label travels: `submit` pushes the whole POSTed batch as one
item of a capped sample list shared by every replica (`feedback:` namespace,
which no route can be called). Every replica polls that list, skips batches it
has seen, and matches each label against its own memory; the one that served
the request finds it (each row counts once) and adds the outcome of every arm
to counter hashes of the route, one per minute (`fb:<minute>`) and one per
rollout window (`fbw:<window>`, what the ladder and the canary's accuracy gate
judge), so every replica reads the same figures. A label can arrive before its answer is remembered
(the drift pass runs every 0.1 s, a batch is matched within POLL_INTERVAL), so
a label no memory holds is tried again on every poll for GRACE seconds (at most
MAX_WAITING of them per replica) before it is given up. A label whose request
is not remembered anywhere (older than the ttl, evicted, sampled out of drift
under load, or on a route without outputs) is never matched: `received` minus
`matched` shows it.

*Outcomes.* `POST /v1/feedback` answers what became of its labels: the
replicas add `matched`, `duplicate` (a row labelled before) and `mismatched`
per batch (`fbb:<batch>`), and the POST waits up to OUTCOME_WAIT for them to
account for every label; the rest is `unknown` (no replica remembers the
request). A label that beat its answer to the memory is still tried for GRACE
after that and counts in the route's figures if it matches.

*Rows.* A label is matched to a row: `{"request_id", "labels": [...]}` (or
`values`) gives one per row, in order, and must have as many as the answer had
rows; `{"request_id", "index": i, "label": ...}` labels row i alone (each row
counts once); a plain `label` fits a request of one row. A label that does not
fit its request's rows is counted as `mismatched`, never guessed.

*Figures.* Classification: a label equal to the prediction (texts compared;
numbers as numbers) is correct; `accuracy` = correct / n per arm, with the
bounds the accuracy gate decides on (router/core/stats.py `shown_bounds`, 99 %).
Regression (`value` instead of `label`): `mae`, the mean
absolute error. `report` gives the totals over the last `HORIZON` minutes, a
sliding window of the last WINDOW minutes, and the series per minute, so
falling accuracy beside flat input drift reads as concept drift (and
router/core/concept.py alarms on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiohttp import web

from router.core.stats import shown_bounds
from router.dataplane.metric_text import metric_lines
from router.drift.label_items import MICRO, Entry, Memory, arm_name, outcome, parse_items, rows_of
from router.ops.admin import Refusal
from router.state.base import StateStore, StoreUnavailable

log = structlog.get_logger("router.drift.labels")

NAMESPACE = "feedback:"  # the store "route" of shared batches; no route name has a colon
BATCH_KIND = "batches"
BATCH_CAP = 1000
BATCH_TTL = 3600.0
SLOT = 60  # seconds per accuracy counter hash
HORIZON = 60  # slots reported (an hour)
WINDOW = 10  # slots of the sliding window reported beside the totals
WINDOW_TTL = 7 * 24 * 3600.0  # per rollout window counts (a level can last days)
POLL_INTERVAL = 0.5
GRACE = 5.0  # seconds an unmatched label is tried again (its answer may come later)
MAX_WAITING = 20_000  # unmatched labels kept for another try, per replica
OUTCOME_WAIT = 1.5  # seconds a POST waits for the replicas to account for its labels
OUTCOME_TTL = 120.0
KINDS = ("matched", "duplicate", "mismatched")

Counters = dict[str, dict[str, dict[str, int]]]  # route -> hash -> field -> increment


def _bump(fields: dict[str, int], key: str, n: int = 1) -> None:
    fields[key] = fields.get(key, 0) + n


class Feedback:
    """One per router process: memory, the shared batches, the figures."""

    def __init__(
        self,
        store: StateStore,
        *,
        max_entries: int = 100_000,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.memory = Memory(max_entries, ttl)
        self.clock = clock
        self.matched = 0  # labels this replica matched
        self.received = 0  # labels POSTed to this replica (any replica may match them)
        # (route, arm, counter field) -> this replica's sums since start, for /metrics
        # (router/ops/telemetry.py): the fields of `outcome`, folded in once stored
        self.totals: dict[tuple[str, str, str], int] = {}
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self._seq = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one poll at a time: a batch is matched once
        # labels no memory held yet, with when this replica first saw them
        self._waiting: list[tuple[float, dict[str, Any]]] = []
        self._late: Counters = {}  # arms scored after their label, for the next poll
        # each arm's accuracy test (router/drift/concept_watch.py), shown with the figures
        self.tests: Callable[[str], Awaitable[dict[str, Any]]] | None = None
        # told every new batch's labels, once per replica: capture writes them (router/capture/)
        self.on_labels: Callable[[list[dict[str, Any]]], None] | None = None

    def remember(
        self,
        rid: str,
        route: str,
        backend: str,
        predictions: tuple[object, ...],
        window: str | None = None,
        role: str = "",
    ) -> None:
        arm = arm_name(backend, role)
        late = self.memory.remember(rid, self.clock(), route, arm, predictions, window)
        if late is not None:  # the label came before this arm's answer: score it now
            route_, window_, rows = late
            counters = self._late.setdefault(route_, {})
            fields = counters.setdefault(f"fb:{int(self.clock() // SLOT)}", {})
            target = counters.setdefault(f"fbw:{window_}", {}) if window_ else None
            self._score(arm, predictions, rows, fields, target)

    # -- the admin side ---------------------------------------------------------------
    async def submit(self, items: Sequence[dict[str, Any]]) -> str:
        """Share one batch of valid labels with every replica (one store write)."""
        self._seq += 1
        batch_id = f"{os.getpid()}-{time.time_ns()}-{self._seq}"
        text = f"{batch_id} {json.dumps(list(items), separators=(',', ':'))}"
        await self.store.push_sample(NAMESPACE, BATCH_KIND, text, BATCH_CAP, BATCH_TTL)
        await self.store.add_counters(NAMESPACE, {"received": {"n": len(items)}}, BATCH_TTL)
        self.received += len(items)
        return batch_id

    async def outcome(self, batch_id: str, n: int, wait: float = OUTCOME_WAIT) -> dict[str, int]:
        """What became of a submitted batch's n labels, waiting up to `wait` seconds for
        the replicas to report; whatever none reported is `unknown`."""
        deadline = time.monotonic() + wait
        name = f"fbb:{batch_id}"
        while True:
            with contextlib.suppress(StoreUnavailable):
                await self.poll()  # this replica's share at once, without the timer
            found = (await self.store.read_counters(NAMESPACE, [name])).get(name, {})
            counts = {k: int(found.get(k, 0)) for k in KINDS}
            if sum(counts.values()) >= n or time.monotonic() >= deadline:
                return {"accepted": n, **counts, "unknown": max(0, n - sum(counts.values()))}
            await asyncio.sleep(0.05)

    # -- every replica: match what arrived ----------------------------------------------
    async def poll(self) -> int:
        """Match every unseen batch and the labels still waiting; returns the rows
        matched here."""
        async with self._lock:
            return await self._poll()

    async def _poll(self) -> int:
        now = self.clock()
        counters, self._late = self._late, {}
        matched = 0
        for seen_at, item in self._candidates(await self._unseen(), now):
            rid = str(item.get("request_id"))
            entry = self.memory.get(rid)
            if entry is None:
                if self.memory.done(rid):
                    self._outcome(counters, item, "duplicate")
                elif len(self._waiting) < MAX_WAITING:
                    self._waiting.append((seen_at, item))
                continue
            route_counters = counters.setdefault(entry[1], {})
            fields = route_counters.setdefault(f"fb:{int(now // SLOT)}", {})
            window = route_counters.setdefault(f"fbw:{entry[2]}", {}) if entry[2] else None
            rows, kind = self._match(rid, entry, item, fields, window)
            matched += rows
            self._outcome(counters, item, kind)
        if counters:
            await self.store.add_counters_many(counters, WINDOW_TTL)
            self._fold(counters)
        self.matched += matched
        return matched

    def _fold(self, counters: Counters) -> None:
        """Add the per-minute hashes just stored to this replica's totals."""
        for route, hashes in counters.items():
            if route == NAMESPACE:
                continue
            for name, fields in hashes.items():
                if not name.startswith("fb:"):
                    continue  # the window hashes hold the same counts again
                for key, n in fields.items():
                    arm, _, field = key.rpartition("#")
                    at = (route, arm, field)
                    self.totals[at] = self.totals.get(at, 0) + n

    def _outcome(self, counters: Counters, item: dict[str, Any], kind: str) -> None:
        shared = counters.setdefault(NAMESPACE, {})
        _bump(shared.setdefault("outcomes", {}), kind)
        if batch := item.get("_batch"):
            _bump(shared.setdefault(f"fbb:{batch}", {}), kind)

    def _match(
        self,
        rid: str,
        entry: Entry,
        item: dict[str, Any],
        fields: dict[str, int],
        window: dict[str, int] | None,
    ) -> tuple[int, str]:
        """Count the rows `item` labels for every arm (each row once); returns (rows
        counted, outcome kind)."""
        _, _, _, arms, done = entry
        first = next(iter(arms.values()))
        pairs = rows_of(item, len(first))
        if pairs is None:
            self.memory.finish(rid)  # a label that does not fit: counted, never guessed
            for arm in arms:
                for target in (fields, window):
                    if target is not None:
                        _bump(target, f"{arm}#mismatched")
            return 0, "mismatched"
        fresh = [(i, one) for i, one in pairs if i not in done]
        for i, one in fresh:
            done[i] = one
        for arm, predictions in arms.items():
            self._score(arm, predictions, fresh, fields, window)
        if len(done) == len(first):
            self.memory.finish(rid)  # every row labelled: the request is done
        return len(fresh), "matched" if fresh else "duplicate"

    @staticmethod
    def _score(
        arm: str,
        predictions: tuple[object, ...],
        rows: list[tuple[int, dict[str, Any]]],
        fields: dict[str, int],
        window: dict[str, int] | None,
    ) -> None:
        """Count one arm's outcome on labelled rows into the minute and window hashes."""
        for i, one in rows:
            if i >= len(predictions):
                continue  # this arm answered fewer rows: nothing of its own to score
            for key, n in outcome(predictions[i], one).items():
                for target in (fields, window):
                    if target is not None:
                        _bump(target, f"{arm}#{key}", n)

    def _candidates(self, fresh: list[str], now: float) -> list[tuple[float, dict[str, Any]]]:
        """The labels still within their GRACE, then those of the new batches, oldest first."""
        out = [(seen_at, item) for seen_at, item in self._waiting if now - seen_at < GRACE]
        self._waiting = []
        for text in reversed(fresh):
            batch, _, body = text.partition(" ")
            items = json.loads(body)
            if self.on_labels is not None:
                self.on_labels(items)
            out += [(now, {**item, "_batch": batch}) for item in items]
        return out

    async def _unseen(self) -> list[str]:
        """Batches not seen yet ("id body"), newest first (reads more while all are new)."""
        count = 16
        while True:
            items = await self.store.samples(NAMESPACE, BATCH_KIND, count)
            fresh = [i for i in items if i.partition(" ")[0] not in self._seen]
            if len(fresh) < len(items) or len(items) < count or count >= BATCH_CAP:
                break
            count *= 4
        for item in fresh:
            self._mark(item.partition(" ")[0])
        return fresh

    def _mark(self, batch_id: str) -> None:
        self._seen.add(batch_id)
        self._seen_order.append(batch_id)
        while len(self._seen_order) > BATCH_CAP * 2:
            self._seen.discard(self._seen_order.popleft())

    # -- figures ------------------------------------------------------------------------
    async def report(self, route: str) -> dict[str, Any]:
        """Accuracy (or mean abs error) per arm: totals over the horizon, the sliding
        window of the last WINDOW minutes, and the series per minute."""
        now_slot = int(self.clock() // SLOT)
        slots = list(range(now_slot - HORIZON + 1, now_slot + 1))
        hashes = await self.store.read_counters(route, [f"fb:{s}" for s in slots])
        shared = await self.store.read_counters(NAMESPACE, ["received", "outcomes"])
        totals: dict[str, dict[str, int]] = {}
        recent: dict[str, dict[str, int]] = {}
        series = []
        for slot in slots:
            per = by_arm(hashes.get(f"fb:{slot}", {}))
            for arm, fields in per.items():
                _add_into(totals.setdefault(arm, {}), fields)
                if slot > now_slot - WINDOW:
                    _add_into(recent.setdefault(arm, {}), fields)
            if per:
                series.append({"at": slot * SLOT, "backends": figures(per)})
        matched = sum(f.get("n", 0) + f.get("rn", 0) for a, f in totals.items() if "~" not in a)
        outcomes = shared.get("outcomes", {})
        return {
            "route": route,
            "horizon_seconds": SLOT * HORIZON,
            "window_seconds": SLOT * WINDOW,
            "backends": figures(totals),
            "window": figures(recent),
            "matched": matched,
            "received_all_routes": shared.get("received", {}).get("n", 0),
            "outcomes_all_routes": {k: int(outcomes.get(k, 0)) for k in KINDS},
            "series": series,
            "accuracy_test": await self.tests(route) if self.tests is not None else {},
        }

    # -- admin API (router/ops/admin.py AdminExtension) ------------------------------------
    def install(self, app: web.Application, refusal: Refusal) -> None:
        """POST /v1/feedback (token); GET /v1/routes/NAME/feedback."""

        async def post(request: web.Request) -> web.Response:
            if (refused := refusal(request)) is not None:
                return refused
            try:
                body = json.loads(await request.read())
            except ValueError:
                return web.json_response({"error": "the body must be JSON"}, status=400)
            items, problems = parse_items(body)
            answer: dict[str, Any] = {"accepted": 0, **dict.fromkeys(KINDS, 0), "unknown": 0}
            if items:
                answer = await self.outcome(await self.submit(items), len(items))
            status = 202 if items or not problems else 400
            return web.json_response({**answer, "rejected": problems}, status=status)

        async def show(request: web.Request) -> web.Response:
            return web.json_response(await self.report(request.match_info["name"]))

        app.router.add_post("/v1/feedback", post)
        app.router.add_get("/v1/routes/{name}/feedback", show)

    def metric_lines(self) -> list[str]:
        return [
            *metric_lines(
                "router_feedback_matched_total",
                "counter",
                "Delayed labels this replica matched to a request it served.",
                [({}, float(self.matched))],
            ),
            *metric_lines(
                "router_feedback_received_total",
                "counter",
                "Delayed labels POSTed to this replica (the replica that served one matches it).",
                [({}, float(self.received))],
            ),
        ]

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="feedback-poll")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                await self.poll()
                self.memory.expire(self.clock())
            except StoreUnavailable as exc:
                log.warning("feedback: state store unreachable", error=str(exc))
            except Exception:  # never die: the next poll tries again
                log.exception("feedback poll failed")


async def window_counts(store: StateStore, route: str, window: str) -> dict[str, dict[str, int]]:
    """Label counts per arm of one rollout window, summed over replicas."""
    name = f"fbw:{window}"
    return by_arm((await store.read_counters(route, [name])).get(name, {}))


def backend_counts(arms: dict[str, dict[str, int]], backend: str) -> tuple[int, int]:
    """(correct, labelled) of every arm of one backend: served, mirrored or held."""
    mine = [f for arm, f in arms.items() if arm.partition("~")[0] == backend]
    return sum(f.get("ok", 0) for f in mine), sum(f.get("n", 0) for f in mine)


def _add_into(total: dict[str, int], fields: dict[str, int]) -> None:
    for k, n in fields.items():
        total[k] = total.get(k, 0) + n


def by_arm(fields: dict[str, int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for key, n in fields.items():
        arm, _, name = key.rpartition("#")
        if arm:
            out.setdefault(arm, {})[name] = int(n)
    return out


def figures(per: dict[str, dict[str, int]]) -> dict[str, dict[str, Any]]:
    """Accuracy with its gate's 99 % bounds (or mean abs error) per arm."""
    out: dict[str, dict[str, Any]] = {}
    for arm, f in sorted(per.items()):
        entry: dict[str, Any] = {}
        if f.get("n"):
            lo, hi = shown_bounds(f.get("ok", 0), f["n"])
            entry.update(n=f["n"], correct=f.get("ok", 0), accuracy=f.get("ok", 0) / f["n"])
            entry.update(lo=lo, hi=hi)
        if f.get("mismatched"):
            entry["mismatched"] = f["mismatched"]  # labels that did not fit the request's rows
        rn = f.get("rn", 0) - f.get("rbad", 0)
        if f.get("rn"):
            entry.update(n_values=f["rn"], mae=(f.get("ae_u", 0) / MICRO / rn) if rn else None)
        out[arm] = entry
    return out
