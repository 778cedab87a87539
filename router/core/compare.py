"""Shadow vs primary: compare two answers item by item, the way an ML engineer would.

Theory of operation
-------------------
Mirroring is only useful if the shadow's answer is judged, and a model answer
is judged per prediction: per *item*. The route's protocol (router/core/protocols/)
reads both answers as items, one column of values per configured name (a V2
tensor, a TF Serving output, a JSON path; `[*]` makes each element an item),
and each pair of values is judged by its field's kind (router/core/compare_kinds.py:
label, number, vector, probs, each with its own notion of "agree").

Per request the result is a `Comparison`: the `FieldResult` of every field for
every item, and one verdict per item (an item agrees when every field agrees
on it and the statuses match). Two answers with a different number of items
are one "shape" disagreement for the whole request (`batch` says how many on
each side), never a row-by-row guess. A side with no value at all for a field
(an error answer, a failed shadow) is "missing" on each of the other side's
items; absent on both sides is "absent", counted apart.

An answer the protocol cannot read (binary tensor data of a type not decoded
here) is not comparable: the comparison carries the reason and no verdict, so
it is counted apart, never as a disagreement. An answer that is not what the
protocol expects (not JSON, malformed tensors) has no items: the shadow's
fault shows as "missing".

With no field configured every output is compared structurally, item by item
(numbers within a float tolerance), and the result lists the differing paths,
like Diffy; a body that is not JSON is then compared as bytes.

Everything here is pure: the mirror workers (router/shadow/mirror.py) do the I/O;
router/shadow/figures.py turns comparisons into counters that add up across
replicas, and back into figures with requests and items both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from router.core.compare_kinds import (
    FieldResult,
    FieldSpec,
    compare_field,
    distance,
    fail,
    is_number,
)
from router.core.jsonpath import MISSING, render
from router.core.protocols import ModelProtocol
from router.core.protocols.base import Items
from router.core.protocols.jsonpaths import JSON

OTHER: Final = "other"  # the confusion-matrix bucket for labels past the bound
MICRO: Final = 1_000_000
_MAX_DEPTH: Final = 64
WHOLE: Final = "$"  # the column of a whole JSON answer (protocol json, no fields)


@dataclass(frozen=True, slots=True)
class Answer:
    """One side's answer: status 0 means no answer at all (connect error, timeout)."""

    status: int
    body: bytes
    latency_s: float


@dataclass(frozen=True, slots=True)
class Comparison:
    fields: tuple[FieldResult, ...]  # every field's result on every item
    status: tuple[int, int]  # (primary, shadow)
    latency: tuple[float, float]  # (primary, shadow), seconds
    paths: tuple[str, ...] = ()  # structural compare: differing paths (bounded)
    body_equal: bool | None = None  # None: bodies were compared field by field
    errors: tuple[str, ...] = ()  # e.g. "shadow: not JSON"
    items: tuple[bool, ...] = ()  # one verdict per item of the request
    batch: tuple[int, int] | None = None  # (primary, shadow) items when they differ
    not_comparable: str = ""  # why the answers could not be read ("": they were)

    @property
    def status_match(self) -> bool:
        return self.status[0] == self.status[1]

    @property
    def latency_delta(self) -> float:
        return self.latency[1] - self.latency[0]

    @property
    def agree(self) -> bool:
        """Same status, the same number of items, every counted field agrees and the
        bodies do not differ."""
        fields_ok = all(f.agree for f in self.fields if f.counted)
        return (
            self.status_match and fields_ok and self.body_equal is not False and self.batch is None
        )


def compare(
    fields: Sequence[FieldSpec],
    primary: Answer,
    shadow: Answer,
    *,
    protocol: ModelProtocol = JSON,
    float_tolerance: float = 1e-6,
    max_paths: int = 50,
) -> Comparison:
    """Compare the shadow's answer with the primary's (see the module docstring)."""
    names = [f.field for f in fields] or None
    p = protocol.answer_items(primary.body, names)
    s = p if shadow.body == primary.body else protocol.answer_items(shadow.body, names)
    status = (primary.status, shadow.status)
    latency = (primary.latency_s, shadow.latency_s)
    errors = _errors(primary, shadow, p, s)
    if p.unreadable or s.unreadable:
        side = "primary" if p.unreadable else "shadow"
        reason = f"{side}: {p.unreadable or s.unreadable}"
        return Comparison((), status, latency, errors=errors, not_comparable=reason)
    if fields:
        return _by_field(fields, p, s, Comparison((), status, latency, errors=errors))
    base = Comparison((), status, latency, errors=errors)
    if p.problem or s.problem:  # no items to walk: the bytes decide
        same = primary.body == shadow.body
        return _with(base, body_equal=same, items=(same and base.status_match,))
    return _structural(p, s, base, float_tolerance, max_paths)


def _errors(primary: Answer, shadow: Answer, p: Items, s: Items) -> tuple[str, ...]:
    out = []
    for side, answer, items in (("primary", primary, p), ("shadow", shadow, s)):
        if answer.status == 0:
            out.append(f"{side}: no answer")
        elif items.problem:
            out.append(f"{side}: {items.problem}")
    return tuple(out)


def _with(c: Comparison, **changes: object) -> Comparison:
    return replace(c, **changes)  # type: ignore[arg-type]


def _by_field(fields: Sequence[FieldSpec], p: Items, s: Items, base: Comparison) -> Comparison:
    results: list[FieldResult] = []
    batch: tuple[int, int] | None = None
    for spec in fields:
        a, b = p.columns.get(spec.field, ()), s.columns.get(spec.field, ())
        if len(a) == len(b):
            if not a:
                results.append(fail(spec, "absent", MISSING, MISSING))
            results += [
                compare_field(spec, x, y, i) for i, (x, y) in enumerate(zip(a, b, strict=True))
            ]
        elif a and b:  # both have items, not as many: one disagreement for the request
            batch = (len(a), len(b))
            results.append(fail(spec, "shape", f"{len(a)} items", f"{len(b)} items"))
        else:
            results += [_one_sided(spec, a, b, i) for i in range(max(len(a), len(b)))]
    items = (False,) if batch else _item_verdicts(results, base.status_match)
    return _with(base, fields=tuple(results), items=items, batch=batch)


def _one_sided(spec: FieldSpec, a: Sequence[object], b: Sequence[object], i: int) -> FieldResult:
    x = a[i] if i < len(a) else MISSING
    y = b[i] if i < len(b) else MISSING
    return fail(spec, "absent" if x is y else "missing", x, y, i)


def _item_verdicts(results: Sequence[FieldResult], status_match: bool) -> tuple[bool, ...]:
    """One verdict per item: every counted field agrees on it, and the statuses match."""
    verdicts: dict[int, bool] = {}
    for r in results:
        if r.counted:
            verdicts[r.item] = verdicts.get(r.item, True) and r.agree
    return tuple(status_match and verdicts[i] for i in sorted(verdicts))


def _structural(p: Items, s: Items, base: Comparison, tolerance: float, limit: int) -> Comparison:
    """Every output of every item, compared as JSON (see `diff_paths`)."""
    if p.count != s.count:
        where = f"{p.count} items vs {s.count}"
        return _with(
            base, paths=(where,), body_equal=False, items=(False,), batch=(p.count, s.count)
        )
    names = list(dict.fromkeys([*p.columns, *s.columns]))
    whole = names == [WHOLE]
    paths: list[str] = []
    verdicts: list[bool] = []
    for i in range(p.count):
        found = diff_paths(_row(p, names, i, whole), _row(s, names, i, whole), tolerance, limit)
        verdicts.append(base.status_match and not found)
        prefix = "" if p.count == 1 else f"item {i}: "
        paths += [prefix + path for path in found][: max(0, limit - len(paths))]
    return _with(base, paths=tuple(paths), body_equal=not paths, items=tuple(verdicts))


def _row(items: Items, names: Sequence[str], i: int, whole: bool) -> object:
    if whole:
        return items.columns[WHOLE][i]
    out: dict[str, object] = {}
    for n in names:
        col = items.columns.get(n, ())
        out[n] = col[i] if i < len(col) else MISSING
    return out


# -- structural compare (no field configured) ---------------------------------


def diff_paths(a: object, b: object, tolerance: float, limit: int = 50) -> list[str]:
    """Paths where two JSON documents differ, at most `limit` of them, in document
    order. Numbers agree within `tolerance` (relative, and absolute near zero); a
    bool is not a number; a member or element present on one side only is a
    difference at its own path."""
    out: list[str] = []
    _diff(a, b, [], tolerance, limit, out)
    return out


def _diff(
    a: object, b: object, at: list[str | int], tol: float, limit: int, out: list[str]
) -> None:
    """Walk both documents; `at` is the current path, pushed and popped in place."""
    if len(out) >= limit:
        return
    if type(a) is not type(b) or len(at) > _MAX_DEPTH:  # too deep: plain equality
        if not _same_leaf(a, b, tol):
            out.append(render(at))
    elif isinstance(a, dict) and isinstance(b, dict):
        _diff_dict(a, b, at, tol, limit, out)
    elif isinstance(a, list) and isinstance(b, list):
        _diff_list(a, b, at, tol, limit, out)
    elif a != b and not _same_leaf(a, b, tol):  # equal scalars of one type: the usual case
        out.append(render(at))


def _diff_dict(
    a: dict[str, object],
    b: dict[str, object],
    at: list[str | int],
    tol: float,
    limit: int,
    out: list[str],
) -> None:
    for key in [*a, *(k for k in b if k not in a)]:
        at.append(key)
        _diff(a.get(key, MISSING), b.get(key, MISSING), at, tol, limit, out)
        at.pop()


def _diff_list(
    a: list[object], b: list[object], at: list[str | int], tol: float, limit: int, out: list[str]
) -> None:
    for i in range(max(len(a), len(b))):
        at.append(i)
        _diff(a[i] if i < len(a) else MISSING, b[i] if i < len(b) else MISSING, at, tol, limit, out)
        at.pop()


def _same_leaf(a: object, b: object, tol: float) -> bool:
    if is_number(a) and is_number(b):
        fa, fb = float(a), float(b)  # type: ignore[arg-type]  # checked by _is_number
        return distance(fa, fb) == 0.0 or math.isclose(fa, fb, rel_tol=tol, abs_tol=tol)
    return type(a) is type(b) and a == b
