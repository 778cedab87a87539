"""Delayed labels: which backend answered what, and how often it was right.

Theory of operation.

*Remembering.* The drift background pass (router/drift_io.py) reads the
answers of routes with `drift.outputs` as items (router/protocols/); for each
2xx answer it calls `remember(request_id, route, backend, predictions)`, one
prediction per item (row of the batch): the values of the FIRST output. A
`Memory` keeps these in insertion order,
bounded by count (`max_entries`, 100k) and age (`ttl`, 1 h): the oldest go
first. It lives in the memory of the replica that served the request.

*Replicas.* A label may reach any replica's admin port (with `--workers N`
only worker 0 has one), not the replica that served the request. Rather than
copy every (request id, answer) into the store, which costs a store write per
request, the label travels: `submit` pushes the whole POSTed batch as one
item of a capped sample list shared by every replica (`feedback:` namespace,
which no route can be called). Every replica polls that list, skips batches it
has seen, and matches each label against its own memory; the one that served
the request finds it (`pop`: a label counts once) and adds the outcome to
counter hashes of the route, one per minute (`fb:<minute>`), so every replica
reads the same figures. A label can arrive before its answer is remembered
(the drift pass runs every 0.1 s, a batch is matched within POLL_INTERVAL), so
a label no memory holds is tried again on every poll for GRACE seconds (at most
MAX_WAITING of them per replica) before it is given up. A label whose request
is not remembered anywhere (older than the ttl, evicted, sampled out of drift
under load, or on a route without outputs) is never matched: `received` minus
`matched` shows it.

*Rows.* A label is matched to a row: `{"request_id", "labels": [...]}` (or
`values`) gives one per row, in order, and must have as many as the answer had
rows; `{"request_id", "index": i, "label": ...}` labels row i alone (each row
counts once); a plain `label` fits a request of one row. A label that does not
fit its request's rows is counted as `mismatched`, never guessed.

*Figures.* Classification: a label equal to the prediction (texts compared;
numbers as numbers) is correct; `accuracy` = correct / n per backend.
Regression (`value` instead of `label`): `mae`, the mean absolute error.
`report` gives the totals over the last `HORIZON` minutes and the series per
minute, so falling accuracy beside flat input drift reads as concept drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from aiohttp import web

from router.admin import Refusal
from router.metrics import metric_lines
from router.state.base import StateStore, StoreUnavailable

log = structlog.get_logger("router.feedback")

NAMESPACE = "feedback:"  # the store "route" of shared batches; no route name has a colon
BATCH_KIND = "batches"
BATCH_CAP = 1000
BATCH_TTL = 3600.0
MAX_ITEMS = 10_000  # labels per POST
SLOT = 60  # seconds per accuracy counter hash
HORIZON = 60  # slots reported (an hour)
POLL_INTERVAL = 0.5
GRACE = 5.0  # seconds an unmatched label is tried again (its answer may come later)
MAX_WAITING = 20_000  # unmatched labels kept for another try, per replica
MICRO = 1_000_000  # absolute errors are summed in millionths (counters are integers)

# (time, route, backend, one prediction per row, rows already labelled)
Entry = tuple[float, str, str, tuple[object, ...], set[int]]


class Memory:
    """request id -> what answered it; bounded by count and age, oldest out first."""

    def __init__(self, max_entries: int = 100_000, ttl: float = 3600.0) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._map: OrderedDict[str, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._map)

    def remember(
        self, rid: str, now: float, route: str, backend: str, predictions: tuple[object, ...]
    ) -> None:
        self._map[rid] = (now, route, backend, predictions, set())
        self._map.move_to_end(rid)
        while len(self._map) > self.max_entries:
            self._map.popitem(last=False)
        self.expire(now)

    def expire(self, now: float) -> None:
        while self._map:
            rid, entry = next(iter(self._map.items()))
            if now - entry[0] < self.ttl:
                return
            del self._map[rid]

    def pop(self, rid: str) -> Entry | None:
        return self._map.pop(rid, None)

    def get(self, rid: str) -> Entry | None:
        return self._map.get(rid)


def parse_items(body: object) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(valid items, problems) from one label, a list of them, or {"items": [...]}."""
    if isinstance(body, dict) and "items" in body:
        body = body["items"]
    raw = body if isinstance(body, list) else [body]
    items: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    for i, item in enumerate(raw[:MAX_ITEMS]):
        error = _problem(item)
        if error or not isinstance(item, dict):
            problems.append({"index": i, "error": error})
        else:
            keep = {"request_id": item["request_id"]}
            keep.update({k: item[k] for k in (*_ONE, *_MANY, "index") if k in item})
            items.append(keep)
    if len(raw) > MAX_ITEMS:
        problems.append({"index": MAX_ITEMS, "error": f"at most {MAX_ITEMS} labels per request"})
    return items, problems


_ONE = ("label", "value")
_MANY = ("labels", "values")  # one per row of a batched request


def _problem(item: object) -> str:
    if not isinstance(item, dict):
        return "must be an object with request_id and label (or value)"
    rid = item.get("request_id")
    if not isinstance(rid, str) or not rid:
        return "request_id must be a non-empty string"
    given = [k for k in (*_ONE, *_MANY) if k in item]
    if len(given) != 1:
        return "needs exactly one of label, value (one row) or labels, values (one per row)"
    key = given[0]
    if key in _MANY:
        if "index" in item:
            return f"index goes with label or value, not {key}"
        rows = item[key]
        if not isinstance(rows, list) or not rows:
            return f"{key} must be a non-empty list, one per row of the request"
        return next((p for p in (_value_problem(key[:-1], v) for v in rows) if p), "")
    index = item.get("index", 0)
    if type(index) is not int or index < 0:
        return "index must be a row number (0, 1, ...)"
    return _value_problem(key, item[key])


def _value_problem(key: str, v: object) -> str:
    if key == "value" and not _finite(v):
        return "value must be a finite number"
    if key == "label" and not isinstance(v, str | int | float | bool):
        return "label must be a string, number or boolean"
    return ""


def _finite(v: object) -> bool:
    return type(v) in (int, float) and math.isfinite(float(v))  # type: ignore[arg-type]


def _text(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def rows_of(item: dict[str, Any], rows: int) -> list[tuple[int, dict[str, Any]]] | None:
    """(row, single label) pairs a posted item labels; None when it does not fit a
    request of `rows` rows (see the module docstring)."""
    for many, one in zip(_MANY, _ONE, strict=True):
        if many in item:
            given = item[many]
            return [(i, {one: v}) for i, v in enumerate(given)] if len(given) == rows else None
    index = item.get("index")
    if index is None:
        return [(0, item)] if rows == 1 else None
    return [(index, item)] if index < rows else None


def outcome(prediction: object, item: dict[str, Any]) -> dict[str, int]:
    """Counter fields (without the backend prefix) for one matched label."""
    if "label" in item:
        return {"n": 1, "ok": int(_text(prediction) == _text(item["label"]))}
    if not _finite(prediction):
        return {"rn": 1, "rbad": 1}  # the model gave no number to compare
    error = abs(float(prediction) - float(item["value"]))  # type: ignore[arg-type]
    return {"rn": 1, "ae_u": round(error * MICRO)}


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
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self._seq = 0
        self._task: asyncio.Task[None] | None = None
        # labels no memory held yet, with when this replica first saw them
        self._waiting: list[tuple[float, dict[str, Any]]] = []

    def remember(self, rid: str, route: str, backend: str, predictions: tuple[object, ...]) -> None:
        self.memory.remember(rid, self.clock(), route, backend, predictions)

    # -- the admin side ---------------------------------------------------------------
    async def submit(self, items: Sequence[dict[str, Any]]) -> None:
        """Share one batch of valid labels with every replica (one store write)."""
        self._seq += 1
        batch_id = f"{os.getpid()}-{time.time_ns()}-{self._seq}"
        text = f"{batch_id} {json.dumps(list(items), separators=(',', ':'))}"
        await self.store.push_sample(NAMESPACE, BATCH_KIND, text, BATCH_CAP, BATCH_TTL)
        await self.store.add_counters(NAMESPACE, {"received": {"n": len(items)}}, BATCH_TTL)

    # -- every replica: match what arrived ----------------------------------------------
    async def poll(self) -> int:
        """Match every unseen batch and the labels still waiting; returns those matched here."""
        now = self.clock()
        counters: dict[str, dict[str, dict[str, int]]] = {}
        matched = 0
        for seen_at, item in self._candidates(await self._unseen(), now):
            entry = self.memory.get(str(item.get("request_id")))
            if entry is None:
                if len(self._waiting) < MAX_WAITING:
                    self._waiting.append((seen_at, item))
                continue
            fields = counters.setdefault(entry[1], {}).setdefault(f"fb:{int(now // SLOT)}", {})
            matched += self._match(str(item["request_id"]), entry, item, fields)
        if counters:
            await self.store.add_counters_many(counters, SLOT * (HORIZON + 1))
        self.matched += matched
        return matched

    def _match(self, rid: str, entry: Entry, item: dict[str, Any], fields: dict[str, int]) -> int:
        """Count the rows `item` labels (each row once); returns how many."""
        _, _, backend, predictions, done = entry
        pairs = rows_of(item, len(predictions))
        if pairs is None:
            self.memory.pop(rid)  # a label that does not fit: counted, never guessed
            fields[f"{backend}#mismatched"] = fields.get(f"{backend}#mismatched", 0) + 1
            return 0
        fresh = [(i, one) for i, one in pairs if i not in done]
        for i, one in fresh:
            done.add(i)
            for key, n in outcome(predictions[i], one).items():
                fields[f"{backend}#{key}"] = fields.get(f"{backend}#{key}", 0) + n
        if len(done) == len(predictions):
            self.memory.pop(rid)  # every row labelled: the request is done
        return len(fresh)

    def _candidates(self, fresh: list[str], now: float) -> list[tuple[float, dict[str, Any]]]:
        """The labels still within their GRACE, then those of the new batches, oldest first."""
        out = [(seen_at, item) for seen_at, item in self._waiting if now - seen_at < GRACE]
        self._waiting = []
        for text in reversed(fresh):
            out += [(now, item) for item in json.loads(text)]
        return out

    async def _unseen(self) -> list[str]:
        """Bodies of batches not seen yet, newest first (reads more while all are new)."""
        count = 16
        while True:
            items = await self.store.samples(NAMESPACE, BATCH_KIND, count)
            fresh = [i for i in items if i.partition(" ")[0] not in self._seen]
            if len(fresh) < len(items) or len(items) < count or count >= BATCH_CAP:
                break
            count *= 4
        for item in fresh:
            self._mark(item.partition(" ")[0])
        return [i.partition(" ")[2] for i in fresh]

    def _mark(self, batch_id: str) -> None:
        self._seen.add(batch_id)
        self._seen_order.append(batch_id)
        while len(self._seen_order) > BATCH_CAP * 2:
            self._seen.discard(self._seen_order.popleft())

    # -- figures ------------------------------------------------------------------------
    async def report(self, route: str) -> dict[str, Any]:
        """Accuracy (or mean abs error) per backend: totals and a per-minute series."""
        now_slot = int(self.clock() // SLOT)
        slots = list(range(now_slot - HORIZON + 1, now_slot + 1))
        hashes = await self.store.read_counters(route, [f"fb:{s}" for s in slots])
        received = await self.store.read_counters(NAMESPACE, ["received"])
        totals: dict[str, dict[str, int]] = {}
        series = []
        for slot in slots:
            per = _by_backend(hashes.get(f"fb:{slot}", {}))
            for backend, fields in per.items():
                total = totals.setdefault(backend, {})
                for k, n in fields.items():
                    total[k] = total.get(k, 0) + n
            if per:
                series.append({"at": slot * SLOT, "backends": _figures(per)})
        matched = sum(f.get("n", 0) + f.get("rn", 0) for f in totals.values())
        return {
            "route": route,
            "horizon_seconds": SLOT * HORIZON,
            "backends": _figures(totals),
            "matched": matched,
            "received_all_routes": received.get("received", {}).get("n", 0),
            "series": series,
        }

    async def accuracy(self, route: str) -> dict[str, Any]:
        """Just the totals per backend (the automation ladder's figures)."""
        return dict((await self.report(route))["backends"])

    # -- admin API (router/admin.py AdminExtension) ------------------------------------
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
            if items:
                await self.submit(items)
            status = 202 if items or not problems else 400
            return web.json_response({"accepted": len(items), "rejected": problems}, status=status)

        async def show(request: web.Request) -> web.Response:
            return web.json_response(await self.report(request.match_info["name"]))

        app.router.add_post("/v1/feedback", post)
        app.router.add_get("/v1/routes/{name}/feedback", show)

    def metric_lines(self) -> list[str]:
        return metric_lines(
            "router_feedback_matched_total",
            "counter",
            "Delayed labels this replica matched to a request it served.",
            [({}, float(self.matched))],
        )

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


def _by_backend(fields: dict[str, int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for key, n in fields.items():
        backend, _, name = key.rpartition("#")
        if backend:
            out.setdefault(backend, {})[name] = int(n)
    return out


def _figures(per: dict[str, dict[str, int]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for backend, f in sorted(per.items()):
        entry: dict[str, Any] = {}
        if f.get("n"):
            entry.update(n=f["n"], correct=f.get("ok", 0), accuracy=f.get("ok", 0) / f["n"])
        if f.get("mismatched"):
            entry["mismatched"] = f["mismatched"]  # labels that did not fit the request's rows
        rn = f.get("rn", 0) - f.get("rbad", 0)
        if f.get("rn"):
            entry.update(n_values=f["rn"], mae=(f.get("ae_u", 0) / MICRO / rn) if rn else None)
        out[backend] = entry
    return out
