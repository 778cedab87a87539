"""A captured exchange as the record a sink writes: redacted first, always.

Runs in capture's background pass (router/capture/writer.py), never on the
request path. One record per arm's answer, every one under the request id:

    {"kind": "exchange", "id", "route", "arm", "role", "reason", "time", "status",
     "latency_ms", "method", "path", "request": BODY, "response": BODY, "items"}
    {"kind": "shadow", "id", "route", "arm", "role", "time", "status", "latency_ms",
     "response": BODY, "primary": {"status", "latency_ms"}}   # paired with the exchange

A BODY is `{"bytes", "headers", "json" | "text" | "stream" | "sha256"}`:
JSON decoded and redacted (router/core/redact.py); text with its patterns
redacted; an event stream as the events (or, on an `openai` route, the completion
they add up to), each redacted; anything the router cannot redact with
certainty only as its length and hash: a binary body, a body cut at
`max_body` (a cut JSON document cannot be parsed, a cut e-mail address not
recognised), a text body on a route that removes JSON paths. The route's
protocol (router/core/protocols/) reads the redacted bodies as items.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from router.config.spec import RouteSpec
from router.core.jsonpath import MISSING
from router.core.protocols import get as protocol_named
from router.core.protocols.base import loads
from router.core.protocols.openai import completion, event_data, is_stream
from router.core.redact import Redactor, redactor_for
from router.dataplane.capture_copy import Captured
from router.dataplane.http1 import Header

Record = dict[str, Any]


def redactor_of(route: RouteSpec) -> Redactor:
    return redactor_for(route.redact)


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _content_type(headers: Sequence[Header]) -> bytes:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.lower()
    return b""


def _fingerprint(data: bytes, total: int, why: str) -> dict[str, Any]:
    return {"bytes": total, "sha256": hashlib.sha256(data).hexdigest()[:16], "kept": why}


def body(
    pieces: Sequence[bytes], total: int, cap: int, headers: Sequence[Header],
    red: Redactor, protocol: str,
) -> dict[str, Any]:  # fmt: skip
    """One body as a record keeps it (see the module docstring); raises RedactionError."""
    data = b"".join(pieces)
    out: dict[str, Any] = {"bytes": total, "headers": red.headers(headers)}
    if not data:
        return out
    if total > cap or len(data) > cap:
        out.update(_fingerprint(data[:cap], total, "cut at max_body: length and hash only"))
        return out
    kind = _content_type(headers)
    if b"event-stream" in kind or is_stream(data):
        out["stream"] = _stream(data, red, protocol)
        return out
    doc = loads(data)
    if doc is not MISSING:
        out["json"] = red.document(doc)
        return out
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        out.update(_fingerprint(data, total, "binary: length and hash only"))
        return out
    if red.remove or red.hashed:  # the paths to take out cannot be found in text
        out.update(_fingerprint(data, total, "not JSON on a route that removes paths"))
        return out
    out["text"] = red.text(text)
    return out


def _stream(data: bytes, red: Redactor, protocol: str) -> Any:
    """An event stream off the path: the completion on an openai route, else the events."""
    if protocol == "openai":
        doc, problem = completion(data)
        if not problem:
            return {"completion": red.document(doc)}
    events: list[object] = []
    for payload in event_data(data):
        doc = loads(payload)
        events.append(red.document(doc) if doc is not MISSING else red.text(payload.decode(
            "utf-8", "replace")))  # fmt: skip
    return {"events": events}


def _kept_bytes(part: dict[str, Any]) -> bytes | None:
    """The redacted body as JSON bytes, for the protocol to read items from."""
    if "json" in part:
        return orjson.dumps(part["json"])
    stream = part.get("stream")
    if isinstance(stream, dict) and "completion" in stream:
        return orjson.dumps(stream["completion"])
    return None


def items(route: RouteSpec, request: dict[str, Any] | None, answer: dict[str, Any] | None
          ) -> dict[str, Any]:  # fmt: skip
    """The protocol's items of the redacted bodies: inputs (the route's drift.inputs
    when named), outputs (drift.outputs, or every output the protocol finds)."""
    protocol = protocol_named(route.protocol)
    out: dict[str, Any] = {}
    names = route.drift.inputs if route.drift is not None else ()
    outputs = route.drift.outputs if route.drift is not None and route.drift.outputs else None
    if route.protocol == "json" and not names and outputs is None:
        return out  # the json protocol's items of an unnamed answer: the answer itself
    if request is not None and names and (raw := _kept_bytes(request)) is not None:
        found = protocol.request_items(raw, names)
        out["inputs"], out["n"] = dict(found.columns), found.count
    if answer is not None and (raw := _kept_bytes(answer)) is not None:
        found = protocol.answer_items(raw, outputs)
        out["outputs"] = {k: list(v) for k, v in found.columns.items()}
        out["n"] = max(out.get("n", 0), found.count)
    return out


def exchange_record(item: Captured, route: RouteSpec, role: str) -> Record:
    """The client's exchange: the request and the answer it was served."""
    (name, backend, reason, rid, status, seconds, wall, method, target, req_headers,
     req, req_len, ans_headers, ans, ans_len) = item  # fmt: skip
    spec, red = route.capture, redactor_of(route)
    cap = spec.max_body if spec is not None else 0
    mode = spec.mode if spec is not None else "all"
    record: Record = {
        "kind": "exchange", "id": rid, "route": name, "arm": backend, "role": role,
        "reason": reason, "time": stamp(wall), "status": status,
        "latency_ms": round(seconds * 1000, 3), "method": method.decode("latin-1"),
        "path": red.text(target.decode("latin-1")),
    }  # fmt: skip
    request = answer = None
    if mode != "response":
        request = record["request"] = body(req, req_len, cap, req_headers, red, route.protocol)
    if mode != "request":
        answer = record["response"] = body(ans, ans_len, cap, ans_headers, red, route.protocol)
    if found := items(route, request, answer):
        record["items"] = found
    return record


def shadow_record(
    route: RouteSpec, rid: str, backend: str, role: str, status: int, latency: float,
    answer: bytes, primary: tuple[int, float], wall: float,
) -> Record:  # fmt: skip
    """A shadow's (or a held model's) answer, paired with the exchange by its id."""
    spec, red = route.capture, redactor_of(route)
    cap = spec.max_body if spec is not None else 0
    record: Record = {
        "kind": "shadow", "id": rid, "route": route.name, "arm": backend, "role": role,
        "time": stamp(wall), "status": status, "latency_ms": round(latency * 1000, 3),
        "response": body((answer,), len(answer), cap, (), red, route.protocol),
        "primary": {"status": primary[0], "latency_ms": round(primary[1] * 1000, 3)},
    }  # fmt: skip
    if found := items(route, None, record["response"]):
        record["items"] = found
    return record


def label_record(route: str, rid: str, label: dict[str, Any], wall: float) -> Record:
    """A delayed label (router/drift/labels.py) for a captured request: what export joins."""
    kept = {k: v for k, v in label.items() if k in ("label", "labels", "value", "values", "index")}
    return {"kind": "label", "id": rid, "route": route, "time": stamp(wall), **kept}
