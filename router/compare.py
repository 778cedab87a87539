"""Shadow vs primary: compare two answers the way an ML engineer would.

Theory of operation
-------------------
Mirroring is only useful if the shadow's answer is judged, and exact equality
is useless for model outputs (a score of 0.8300001 against 0.83 is the same
decision). So each configured field has a kind with its own notion of "agree":

    label   equal values; the pair (primary, shadow) feeds a confusion matrix
    number  |a - b| <= abs + rel * |a|  (a = primary's value)
    vector  max |a_i - b_i| <= tol, or cosine(a, b) >= min_similarity
    probs   same argmax (top-1); the distance is the total variation 0.5 Σ|p - q|

A field absent on one side disagrees with reason "missing"; a value of the
wrong type disagrees with reason "type" ("shape" for vectors or probability
lists of different lengths). Absent on both sides is "absent": neither model produced it, which
is neither agreement nor disagreement, so it is counted apart. Status codes and
latency are always compared. With no field configured the whole JSON documents
are compared structurally, numbers within a float tolerance, and the result is
the list of differing paths (`$.a.b[2]`), like Diffy. A body that is not JSON
is compared as bytes.

Everything here is pure: `compare` takes two `Answer` values and returns a
`Comparison`; the mirror workers (elsewhere) do the I/O. Figures must add up
across replicas, so router/compare_figures.py's `tally_fields` turns one
comparison into integer counters
for the state store's counter hashes (HINCRBY), and `summarize` turns the sum
back into rates with Wilson intervals, mean distances, a confusion matrix and
latency quantiles. Real-valued sums are kept in integer micro-units. Maxima do
not add up through HINCRBY, so `Tally` keeps them in process.

Counter hash layout (one hash per compared pair, e.g. `cmp:<shadow backend>`):

    n agree status_mismatch no_answer body_mismatch p_not_json s_not_json
    lat_delta_us            sum of (shadow - primary) latency, µs
    lat|p|<i> lat|s|<i>     latency histogram buckets (LAT_BOUNDS) of each side
    f|<field>|n agree missing type shape absent diff_n diff_u
    f|<field>|cm|<p>|<s>    confusion-matrix cell (label and probs fields)

`|` and `%` inside field names and labels are percent-escaped. How the mirror
workers are meant to use it (names from `counter_name`):

    tally = Tally(counter_name(shadow_backend))          # one per route and pair
    c = compare(spec.compare, primary, shadow, float_tolerance=spec.float_tolerance)
    tally.add(c)                                          # ~10 µs, in memory
    if not c.agree: push_sample(route, "diffs", disagreement_record(...), ...)
    every second: add_counters(route, tally.drain(), ttl)   # restore() on failure
    reading: summarize(read_counters(route, [name])[name])

Noise floor: a second copy of the primary's version (the "secondary") answers
some requests too; its disagreement with the primary is pure nondeterminism
(GPU kernels, batching, sampling). `noise_report` subtracts it and flags a
field as noisy when the shadow's disagreement is not clearly above it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from router.confkit import Node
from router.jsonpath import MISSING, JsonPath, compile_path, render

KINDS: Final = ("label", "number", "vector", "probs")
METRICS: Final = ("max_abs", "cosine")
OTHER: Final = "other"  # the confusion-matrix bucket for labels past the bound
MICRO: Final = 1_000_000
_MAX_DEPTH: Final = 64
_NUMBER_TYPES: Final = frozenset({int, float})

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One compared field; kind-specific settings keep their defaults otherwise."""

    field: str  # the path as written, also the field's name in counters
    path: JsonPath
    kind: str  # one of KINDS
    abs_tol: float = 0.0  # number
    rel_tol: float = 0.0  # number
    metric: str = "max_abs"  # vector: max_abs or cosine
    tol: float = 0.0  # vector, max_abs
    min_similarity: float = 0.99  # vector, cosine


@dataclass(frozen=True, slots=True)
class Answer:
    """One side's answer: status 0 means no answer at all (connect error, timeout)."""

    status: int
    body: bytes
    latency_s: float


@dataclass(frozen=True, slots=True)
class FieldResult:
    field: str
    kind: str
    agree: bool
    reason: str = ""  # "" when agreeing; else differs, missing, absent, type, shape
    diff: float | None = None  # a distance, 0 = identical (|a-b|, max-abs, 1-cos, TVD)
    labels: tuple[str, str] | None = None  # (primary, shadow) for label and probs
    similarity: float | None = None  # vector, cosine
    primary: object = MISSING  # the values compared, for disagreement samples
    shadow: object = MISSING

    @property
    def counted(self) -> bool:
        """False when neither side had the field: it says nothing about agreement."""
        return self.reason != "absent"


@dataclass(frozen=True, slots=True)
class Comparison:
    fields: tuple[FieldResult, ...]
    status: tuple[int, int]  # (primary, shadow)
    latency: tuple[float, float]  # (primary, shadow), seconds
    paths: tuple[str, ...] = ()  # structural compare: differing paths (bounded)
    body_equal: bool | None = None  # None: bodies were compared field by field
    errors: tuple[str, ...] = ()  # e.g. "shadow: not JSON"

    @property
    def status_match(self) -> bool:
        return self.status[0] == self.status[1]

    @property
    def latency_delta(self) -> float:
        return self.latency[1] - self.latency[0]

    @property
    def agree(self) -> bool:
        """Same status, every counted field agrees and the bodies do not differ."""
        fields_ok = all(f.agree for f in self.fields if f.counted)
        return self.status_match and fields_ok and self.body_equal is not False


# -- comparing one answer pair ----------------------------------------------


def compare(
    fields: Sequence[FieldSpec],
    primary: Answer,
    shadow: Answer,
    *,
    float_tolerance: float = 1e-6,
    max_paths: int = 50,
) -> Comparison:
    """Compare the shadow's answer with the primary's (see the module docstring)."""
    same_bytes = primary.body == shadow.body
    p_doc = _decode(primary.body)
    s_doc = p_doc if same_bytes else _decode(shadow.body)  # read-only: one parse will do
    errors = _errors(primary, shadow, p_doc, s_doc)
    status = (primary.status, shadow.status)
    latency = (primary.latency_s, shadow.latency_s)
    if same_bytes and not fields:
        return Comparison((), status, latency, (), True, errors)
    if p_doc is MISSING or s_doc is MISSING:
        results = tuple(compare_field(f, _get(f, p_doc), _get(f, s_doc)) for f in fields)
        return Comparison(results, status, latency, (), same_bytes, errors)
    if fields:
        results = tuple(compare_field(f, f.path.get(p_doc), f.path.get(s_doc)) for f in fields)
        return Comparison(results, status, latency, errors=errors)
    paths = diff_paths(p_doc, s_doc, float_tolerance, max_paths)
    return Comparison((), status, latency, tuple(paths), not paths, errors)


def _decode(body: bytes) -> object:
    try:
        return json.loads(body) if body else MISSING
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return MISSING


def _get(spec: FieldSpec, doc: object) -> object:
    return MISSING if doc is MISSING else spec.path.get(doc)


def _errors(primary: Answer, shadow: Answer, p_doc: object, s_doc: object) -> tuple[str, ...]:
    out = []
    for side, answer, doc in (("primary", primary, p_doc), ("shadow", shadow, s_doc)):
        if answer.status == 0:
            out.append(f"{side}: no answer")
        elif doc is MISSING:
            out.append(f"{side}: not JSON")
    return tuple(out)


def compare_field(spec: FieldSpec, a: object, b: object) -> FieldResult:
    """Compare the two values of one field according to its kind."""
    if a is MISSING or b is MISSING:
        return _fail(spec, "absent" if a is b else "missing", a, b)
    if spec.kind == "label":
        return _label(spec, a, b)
    if spec.kind == "number":
        return _number(spec, a, b)
    if spec.kind == "vector":
        return _vector(spec, a, b)
    return _probs(spec, a, b)


def _fail(spec: FieldSpec, reason: str, a: object, b: object) -> FieldResult:
    return FieldResult(spec.field, spec.kind, False, reason, primary=a, shadow=b)


def _verdict(
    spec: FieldSpec,
    agree: bool,
    a: object,
    b: object,
    *,
    diff: float | None = None,
    labels: tuple[str, str] | None = None,
    similarity: float | None = None,
) -> FieldResult:
    reason = "" if agree else "differs"
    return FieldResult(spec.field, spec.kind, agree, reason, diff, labels, similarity, a, b)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def label_text(value: object) -> str:
    """A label as text: strings as they are, other scalars as JSON (1, true, null)."""
    return value if isinstance(value, str) else json.dumps(value)


def _label(spec: FieldSpec, a: object, b: object) -> FieldResult:
    if isinstance(a, list | dict) or isinstance(b, list | dict):
        return _fail(spec, "type", a, b)
    pa, pb = label_text(a), label_text(b)
    agree = pa == pb and type(a) is type(b)
    return _verdict(spec, agree, a, b, labels=(pa, pb))


def _distance(a: float, b: float) -> float:
    """|a - b| where equal infinities and NaN against NaN count as identical."""
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    return abs(a - b)


def _number(spec: FieldSpec, a: object, b: object) -> FieldResult:
    if not (_is_number(a) and _is_number(b)):
        return _fail(spec, "type", a, b)
    fa, fb = float(a), float(b)  # type: ignore[arg-type]  # checked by _is_number
    diff = _distance(fa, fb)
    agree = diff == 0.0 or diff <= spec.abs_tol + spec.rel_tol * abs(fa)  # 0*inf is NaN
    return _verdict(spec, agree, a, b, diff=diff)


def _floats(value: object) -> list[float] | None:
    """A list of numbers as floats; None if it is not one (a bool is not a number)."""
    if not isinstance(value, list) or not set(map(type, value)) <= _NUMBER_TYPES:
        return None  # map(type) runs in C: ~20x faster than isinstance per item
    return [float(x) for x in value]


def _vector(spec: FieldSpec, a: object, b: object) -> FieldResult:
    va, vb = _floats(a), _floats(b)
    if va is None or vb is None:
        return _fail(spec, "type", a, b)
    if len(va) != len(vb):
        return _fail(spec, "shape", a, b)
    xa, xb = np.array(va, dtype=np.float64), np.array(vb, dtype=np.float64)
    gaps = _gaps(xa, xb)
    if spec.metric == "cosine":
        sim = 1.0 if not gaps.any() else cosine(xa, xb)  # inf coordinates make cosine NaN
        agree = sim >= spec.min_similarity
        return _verdict(spec, agree, a, b, diff=1.0 - sim, similarity=sim)
    diff = float(gaps.max()) if gaps.size else 0.0
    return _verdict(spec, diff <= spec.tol, a, b, diff=diff)


def _gaps(a: FloatArray, b: FloatArray) -> FloatArray:
    """|a - b| per coordinate, 0 where equal (infinities too) or both NaN."""
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, by design overwritten below
        gaps = np.abs(a - b)
    gaps[(a == b) | (np.isnan(a) & np.isnan(b))] = 0.0
    return gaps


def cosine(a: Sequence[float] | FloatArray, b: Sequence[float] | FloatArray) -> float:
    """Cosine similarity; two zero vectors are identical, one zero vector is orthogonal."""
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        na, nb = float(np.linalg.norm(xa)), float(np.linalg.norm(xb))
        if na == 0.0 or nb == 0.0:
            return 1.0 if na == nb else 0.0
        sim = float(np.dot(xa, xb)) / (na * nb)
    return sim if math.isnan(sim) else max(-1.0, min(1.0, sim))  # rounding can pass ±1


def _distribution(value: object) -> dict[str, float] | None:
    """Probabilities as {class: p}: a list is keyed by index, an object by name."""
    if isinstance(value, list):
        floats = _floats(value)
        return None if floats is None else {str(i): p for i, p in enumerate(floats)}
    if isinstance(value, dict) and set(map(type, value.values())) <= _NUMBER_TYPES:
        return {str(k): float(v) for k, v in value.items()}
    return None


def _probs(spec: FieldSpec, a: object, b: object) -> FieldResult:
    pa, pb = _distribution(a), _distribution(b)
    if pa is None or pb is None:
        return _fail(spec, "type", a, b)
    if not pa or not pb or (isinstance(a, list) and len(pa) != len(pb)):
        return _fail(spec, "shape", a, b)
    tvd = total_variation(pa, pb)
    top = (max(pa, key=pa.__getitem__), max(pb, key=pb.__getitem__))  # first max wins ties
    agree = top[0] == top[1]
    return _verdict(spec, agree, a, b, diff=tvd, labels=top)


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """0.5 Σ |p - q| over the union of classes (a class one side lacks has p = 0)."""
    keys = p.keys() | q.keys()
    return 0.5 * math.fsum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)


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
    if _is_number(a) and _is_number(b):
        fa, fb = float(a), float(b)  # type: ignore[arg-type]  # checked by _is_number
        return _distance(fa, fb) == 0.0 or math.isclose(fa, fb, rel_tol=tol, abs_tol=tol)
    return type(a) is type(b) and a == b


# -- config: the `compare:` list ----------------------------------------------


def parse_compare(items: Sequence[tuple[str, object]], errors: list[str]) -> tuple[FieldSpec, ...]:
    """Read a `compare:` list (the (path, item) pairs of `Node.items`); problems go
    to `errors` with their exact path. Shared by shadow and the canary's gate."""
    out: list[FieldSpec] = []
    seen: set[str] = set()
    for path, item in items:
        if not isinstance(item, dict):
            errors.append(f"{path}: must be a mapping like {{field: $.label, kind: label}}")
            continue
        node = Node(item, path, errors)
        spec = _field_spec(node)
        node.done()
        if spec is None:
            continue
        if spec.field in seen:
            node.error(node.sub("field"), "is compared twice", spec.field)
            continue
        seen.add(spec.field)
        out.append(spec)
    return tuple(out)


def _field_spec(node: Node) -> FieldSpec | None:
    text = node.string("field", required=True)
    kind = node.choice("kind", "", KINDS)
    if not node.has("kind"):
        node.error(node.sub("kind"), f"is required, one of {', '.join(KINDS)}")
    path = _path(node, text)
    settings = _settings(node, kind)  # read even when invalid, so done() flags no known key
    return FieldSpec(text, path, kind, **settings) if path and kind else None


def _settings(node: Node, kind: str) -> dict[str, Any]:
    """The keys only this kind accepts; any other key is left for done() to refuse."""
    if kind == "number":
        return {
            "abs_tol": read_real(node, "abs", 0.0, 0.0, math.inf),
            "rel_tol": read_real(node, "rel", 0.0, 0.0, math.inf),
        }
    if kind != "vector":
        return {}
    metric = node.choice("metric", "max_abs", METRICS)
    if metric == "cosine":
        return {
            "metric": metric,
            "min_similarity": read_real(node, "min_similarity", 0.99, -1.0, 1.0),
        }
    return {"metric": metric, "tol": read_real(node, "tol", 0.0, 0.0, math.inf)}


def read_real(node: Node, key: str, default: float, lo: float, hi: float) -> float:
    """`Node.number` that also takes `1e-6`: YAML 1.1 reads an exponent without a
    dot as a string, and tolerances are exactly where people write one."""
    value = node.data.get(key)
    if not isinstance(value, str):
        return node.number(key, default, lo, hi)
    node.raw(key)
    try:
        number = float(value)
    except ValueError:
        number = math.nan  # fails the range check below
    if lo <= number <= hi:
        return number
    node.error(node.sub(key), f"must be a number in {lo:g}..{hi:g}", value)
    return default


def _path(node: Node, text: str) -> JsonPath | None:
    if not text:
        return None
    try:
        return compile_path(text)
    except ValueError as exc:
        node.error(node.sub("field"), f"bad JSONPath: {exc}", text)
        return None
