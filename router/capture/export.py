"""`routerctl export ROUTE --since 1h`: captured records joined with their delayed labels.

`GET /v1/routes/NAME/export?since=1h&format=jsonl` (a viewer's read) reads the
route's file sink, the rotated files too, oldest first, in a thread, and
streams JSON lines. Each exchange is joined with the shadows' answers to the
same request and the labels posted for it (router/capture/writer.py writes them
as `label` records). A request of one item is one line; a batch is one line
per item (the protocol's items of the redacted bodies: inputs, outputs, each
shadow's outputs and the item's label), ready to retrain on or to score the
candidate offline. Only what capture wrote is read: it was redacted before it
reached the file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Final

import orjson
from aiohttp import web

from router.capture.files import rotated
from router.config.spec import FileSinkSpec, RouteSpec
from router.core.confkit import parse_duration

FORMATS: Final = ("jsonl",)
Row = dict[str, Any]


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "message": message}, status=status)


async def handle(request: web.Request, route: RouteSpec | None, now: float) -> web.StreamResponse:
    name = request.match_info["name"]
    if route is None:
        return _json_error(404, f"unknown route {name!r}")
    if route.capture is None:
        return _json_error(409, f"route {name!r} does not capture (no capture: block)")
    if route.capture.file is None:
        return _json_error(409, f"route {name!r} captures to an http sink: export reads files")
    since = parse_duration(request.query.get("since", "1h"))
    if since is None:
        return _json_error(400, "since must be a duration like 30m or 1h")
    fmt = request.query.get("format", "jsonl")
    if fmt not in FORMATS:
        return _json_error(400, f"format must be one of {', '.join(FORMATS)} (parquet: routerctl)")
    file = route.capture.file
    rows = await asyncio.to_thread(lambda: list(joined(file, name, now - since)))
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    for i in range(0, len(rows), 256):
        await response.write(b"".join(orjson.dumps(r) + b"\n" for r in rows[i : i + 256]))
    await response.write_eof()
    return response


def _records(spec: FileSinkSpec, route: str, since: float) -> Iterator[dict[str, Any]]:
    for path in rotated(spec.path, spec.keep):
        with open(path, "rb") as f:
            for line in f:
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a line cut by a crash: skipped
                if not isinstance(record, dict) or record.get("route") != route:
                    continue
                when = record.get("time")
                if isinstance(when, str) and datetime.fromisoformat(when).timestamp() >= since:
                    yield record


def joined(spec: FileSinkSpec, route: str, since: float) -> Iterator[Row]:
    """Rows of the route's exchanges since `since` (epoch seconds), oldest first."""
    exchanges: list[dict[str, Any]] = []
    shadows: dict[str, dict[str, dict[str, Any]]] = {}
    labels: dict[str, list[dict[str, Any]]] = {}
    for record in _records(spec, route, since):
        kind, rid = record.get("kind"), str(record.get("id"))
        if kind == "exchange":
            exchanges.append(record)
        elif kind == "shadow":
            shadows.setdefault(rid, {})[str(record.get("arm"))] = record
        elif kind == "label":
            labels.setdefault(rid, []).append(record)
    for ex in exchanges:
        rid = str(ex.get("id"))
        yield from rows(ex, shadows.get(rid, {}), labels.get(rid, []))


def content(part: object) -> object:
    """What a record kept of a body: its JSON, text or stream (None: only a hash)."""
    if not isinstance(part, dict):
        return None
    for key in ("json", "text", "stream"):
        if key in part:
            return part[key]
    return None


def item_labels(labels: list[dict[str, Any]], n: int) -> list[object]:
    """One label per item (None where none came); the latest label of an item wins."""
    out: list[object] = [None] * max(n, 1)
    for label in labels:
        many = label.get("labels", label.get("values"))
        if isinstance(many, list):
            for i, value in enumerate(many[: len(out)]):
                out[i] = value
            continue
        one = label.get("label", label.get("value"))
        index = label.get("index", 0)
        if isinstance(index, int) and 0 <= index < len(out):
            out[index] = one
    return out


def _column(columns: object, i: int) -> dict[str, Any]:
    if not isinstance(columns, dict):
        return {}
    return {k: v[i] for k, v in columns.items() if isinstance(v, list) and i < len(v)}


def rows(ex: dict[str, Any], shadows: dict[str, dict[str, Any]], labels: list[dict[str, Any]]
         ) -> Iterator[Row]:  # fmt: skip
    items = ex.get("items") or {}
    n = int(items.get("n") or 1)
    per = item_labels(labels, n)
    head = {k: ex.get(k) for k in ("id", "route", "time", "arm", "role", "status", "latency_ms")}
    if n <= 1:
        yield {**head, "request": content(ex.get("request")), "response": content(ex.get(
            "response")), "shadows": {arm: {"status": s.get("status"), "response": content(s.get(
                "response"))} for arm, s in shadows.items()}, "label": per[0]}  # fmt: skip
        return
    for i in range(n):
        yield {
            **head, "item": i, "inputs": _column(items.get("inputs"), i),
            "outputs": _column(items.get("outputs"), i),
            "shadows": {arm: _column((s.get("items") or {}).get("outputs"), i)
                        for arm, s in shadows.items()},
            "label": per[i],
        }  # fmt: skip
