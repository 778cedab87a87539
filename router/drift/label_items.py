"""Delayed labels, the pure part: what is remembered, what a label says, its outcome.

See router/drift/labels.py for the theory of operation. Here: the bounded `Memory`
of answers per request id and arm, the validation of posted labels
(`parse_items`), which rows a label names (`rows_of`) and the counter fields
of one matched label (`outcome`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

MAX_ITEMS = 10_000  # labels per POST
MICRO = 1_000_000  # absolute errors are summed in millionths (counters are integers)


# (time, route, rollout window or None, predictions per arm, labels of the rows
# already labelled: row -> the posted label item)
Entry = tuple[float, str, str | None, dict[str, tuple[object, ...]], dict[int, dict[str, Any]]]
# an arm that answered after labels came: (route, window, the labelled rows) to score it on
Late = tuple[str, str | None, list[tuple[int, dict[str, Any]]]]
RECENT = 20_000  # finished requests whose labels are kept for an arm that answers late


def arm_name(backend: str, role: str = "") -> str:
    """The arm a prediction is scored under: the backend that answered the client, or
    `backend~role` for an answer nobody was served (mirror, assist, deferred)."""
    return f"{backend}~{role}" if role else backend


class Memory:
    """request id -> what answered it; bounded by count and age, oldest out first.

    One request can have several arms (the human's served answer and the model's
    mirrored or held one): each is added to the same entry. A request whose rows
    are all labelled leaves the memory, and its id is kept (as many as entries)
    so that a label sent again is told apart from one nobody can match. An arm
    can answer after the label came (a mirror slower than the label, or the drift
    pass behind the mirror): `remember` then returns the labelled rows, so that
    the arm is scored on them too, once (the labels of the last RECENT finished
    requests are kept for that)."""

    def __init__(self, max_entries: int = 100_000, ttl: float = 3600.0) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._map: OrderedDict[str, Entry] = OrderedDict()
        self._done: OrderedDict[str, None] = OrderedDict()
        # finished lately: (route, window, labels by row, arms already scored)
        self._recent: OrderedDict[str, tuple[str, str | None, dict[int, Any], set[str]]] = (
            OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._map)

    def remember(
        self,
        rid: str,
        now: float,
        route: str,
        arm: str,
        predictions: tuple[object, ...],
        window: str | None = None,
    ) -> Late | None:
        """Add an arm's answer; the rows it must be scored on when labels came first."""
        if rid in self._done:
            recent = self._recent.get(rid)
            if recent is None or recent[0] != route or arm in recent[3]:
                return None
            recent[3].add(arm)
            return recent[0], recent[1], list(recent[2].items())
        entry = self._map.get(rid)
        if entry is not None and entry[1] == route:
            late = entry[4] and arm not in entry[3]
            entry[3][arm] = predictions
            return (route, entry[2], list(entry[4].items())) if late else None
        self._map[rid] = (now, route, window, {arm: predictions}, {})
        self._map.move_to_end(rid)
        while len(self._map) > self.max_entries:
            self._map.popitem(last=False)
        self.expire(now)
        return None

    def expire(self, now: float) -> None:
        while self._map:
            rid, entry = next(iter(self._map.items()))
            if now - entry[0] < self.ttl:
                return
            del self._map[rid]

    def pop(self, rid: str) -> Entry | None:
        return self._map.pop(rid, None)

    def finish(self, rid: str) -> None:
        """Every row of `rid` is labelled: forget it, remember that it was."""
        entry = self._map.pop(rid, None)
        self._done[rid] = None
        while len(self._done) > self.max_entries:
            self._done.popitem(last=False)
        if entry is not None and entry[4]:
            self._recent[rid] = (entry[1], entry[2], entry[4], set(entry[3]))
            while len(self._recent) > RECENT:
                self._recent.popitem(last=False)

    def done(self, rid: str) -> bool:
        return rid in self._done

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
