"""Sampled disagreements: one JSON line per disagreeing comparison, for `routerctl diffs`.

Bounded on purpose: answers are cut, and with `fields_only` only the compared
values are kept (answers can hold personal data); the request body only when
the route asks for it. Redacted first, like capture (router/core/redact.py, the
route's `redact:` block): JSON answers and the request are decoded, their paths
removed or hashed and their strings' patterns replaced before they are cut;
text gets its patterns replaced; compared values are redacted too. A body that
cannot be redacted with certainty is kept as its length and hash; a
`RedactionError` reaches the caller, which drops the sample.
"""

from __future__ import annotations

import json
import math
from typing import Any

from router.core.compare import Comparison
from router.core.compare_kinds import FieldResult
from router.core.jsonpath import MISSING
from router.core.protocols.base import inflate, loads
from router.core.redact import Redactor, fingerprint
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
    redactor: Redactor | None = None,
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
            _field_record(r, max_chars, len(comparison.items) > 1, redactor)
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
        record["primary"] = _cut(_redacted(inflate(primary_body), redactor), max_chars)
        record["shadow"] = _cut(_redacted(inflate(shadow_body), redactor), max_chars)
    if request_body is not None:
        record["request"] = _cut(_redacted(inflate(request_body), redactor), max_chars)
    return json.dumps(record, separators=(",", ":"), allow_nan=False, default=str)


def _redacted(body: bytes, red: Redactor | None) -> str:
    """A body as text for a sample: redacted JSON, redacted text, or only a hash."""
    if red is None:
        return body.decode("utf-8", "replace")
    doc = loads(body)
    if doc is not MISSING:
        kept = red.document(doc)  # nothing taken out: the answer as the backend wrote it
        text = body.decode("utf-8", "replace")
        return text if kept == doc else json.dumps(kept, separators=(",", ":"), default=str)
    text = body.decode("utf-8", "replace")
    if red.remove or red.hashed:  # the paths cannot be found in text: keep nothing of it
        return json.dumps(fingerprint(text))
    return red.text(text)


def _field_record(
    r: FieldResult, max_chars: int, batched: bool, red: Redactor | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"field": r.field, "reason": r.reason}
    if batched:
        out["item"] = r.item
    if r.diff is not None and math.isfinite(r.diff):
        out["diff"] = r.diff
    if r.labels is not None:
        out["labels"] = list(r.labels)
    out["primary"] = _value_text(r.primary, max_chars, red)
    out["shadow"] = _value_text(r.shadow, max_chars, red)
    if red is not None and red.rules and r.labels is not None:
        out["labels"] = [red.text(str(x)) for x in r.labels]
    return out


def _value_text(value: object, max_chars: int, red: Redactor | None = None) -> str | None:
    """A compared value as JSON text (None when absent), redacted, cut to `max_chars`."""
    if value is MISSING:
        return None
    if red is not None and red.rules:
        value = red.document(value)
    return _cut(json.dumps(value, separators=(",", ":")), max_chars)


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}…(+{len(text) - max_chars} chars)"


def sample_line(
    copy: MirrorCopy,
    backend: str,
    c: Comparison,
    shadow_body: bytes,
    spec: SampleSpec,
    red: Redactor | None = None,
) -> str:
    """One disagreement of a mirror copy as the stored sample (shadow named, path kept
    unless only the fields may be)."""
    record = disagreement_record(
        copy.request_id,
        c,
        copy.primary_body or b"",
        shadow_body,
        fields_only=spec.fields_only,
        request_body=copy.body if spec.store_request_body else None,
        redactor=red,
    )
    # the record is a JSON object: name the shadow (and the path, unless only the
    # fields may be kept: a query string can hold personal data) without a re-parse
    path = copy.target.decode("latin-1")
    path = red.text(path) if red is not None else path
    target = "" if spec.fields_only else f'"target":{json.dumps(path)},'
    return f'{{"backend":{json.dumps(backend)},{target}{record[1:]}'
