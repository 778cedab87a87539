"""Sampled disagreements: one JSON line per disagreeing comparison, for `routerctl diffs`.

Bounded on purpose: answers are cut, and with `fields_only` only the compared
values are kept (answers can hold personal data); the request body only when
the route asks for it.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from router.core.compare import Comparison
from router.core.compare_kinds import FieldResult
from router.core.jsonpath import MISSING
from router.core.protocols.base import inflate

if TYPE_CHECKING:
    from router.dataplane.shadow_copy import MirrorCopy
    from strategies.shadow import SampleSpec


def disagreement_record(
    request_id: str,
    comparison: Comparison,
    primary_body: bytes,
    shadow_body: bytes,
    *,
    max_chars: int = 2000,
    fields_only: bool = False,
    request_body: bytes | None = None,
) -> str:
    """One disagreement as a JSON line for the samples list (`routerctl diffs`).

    Answers are cut to `max_chars` characters each; with `fields_only` only the
    compared fields' values are kept, never the rest of the answers (for answers
    that may hold personal data). The request body is stored only when given.
    """
    record: dict[str, Any] = {
        "id": request_id,
        "status": list(comparison.status),
        "latency_ms": [round(x * 1000, 3) for x in comparison.latency],
        "fields": [
            _field_record(r, max_chars, len(comparison.items) > 1)
            for r in comparison.fields
            if not r.agree
        ],
    }
    if len(comparison.items) > 1:
        record["items"] = [len(comparison.items), sum(comparison.items)]  # [compared, agreeing]
    if comparison.batch is not None:
        record["batch"] = list(comparison.batch)
    if comparison.paths:
        record["paths"] = list(comparison.paths)
    if comparison.errors:
        record["errors"] = list(comparison.errors)
    if not fields_only:
        # a gzipped answer (MLServer's, for a client that accepts gzip) shown as text
        record["primary"] = _cut(inflate(primary_body).decode("utf-8", "replace"), max_chars)
        record["shadow"] = _cut(inflate(shadow_body).decode("utf-8", "replace"), max_chars)
    if request_body is not None:
        record["request"] = _cut(inflate(request_body).decode("utf-8", "replace"), max_chars)
    return json.dumps(record, separators=(",", ":"), allow_nan=False, default=str)


def _field_record(r: FieldResult, max_chars: int, batched: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"field": r.field, "reason": r.reason}
    if batched:
        out["item"] = r.item
    if r.diff is not None and math.isfinite(r.diff):
        out["diff"] = r.diff
    if r.labels is not None:
        out["labels"] = list(r.labels)
    out["primary"] = _value_text(r.primary, max_chars)
    out["shadow"] = _value_text(r.shadow, max_chars)
    return out


def _value_text(value: object, max_chars: int) -> str | None:
    """A compared value as JSON text (None when absent), cut to `max_chars`."""
    if value is MISSING:
        return None
    return _cut(json.dumps(value, separators=(",", ":")), max_chars)


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}…(+{len(text) - max_chars} chars)"


def sample_record(
    copy: MirrorCopy, backend: str, c: Comparison, shadow_body: bytes, spec: SampleSpec
) -> str:
    """One disagreement of `backend` with the primary, as the route's sample settings
    allow it to be kept (router/shadow/mirror.py pushes it to the route's diffs list)."""
    record = disagreement_record(
        copy.request_id,
        c,
        copy.primary_body or b"",
        shadow_body,
        fields_only=spec.fields_only,
        request_body=copy.body if spec.store_request_body else None,
    )
    # the record is a JSON object: name the shadow (and the path, unless only the
    # fields may be kept: a query string can hold personal data) without a re-parse
    target = "" if spec.fields_only else f'"target":{json.dumps(copy.target.decode("latin-1"))},'
    return f'{{"backend":{json.dumps(backend)},{target}{record[1:]}'
