"""Comparison figures that add up across replicas, read back as rates.

`router/core/compare.py` judges one pair of answers; this module turns many such
judgements into integer counters for the state store's counter hashes
(`tally_fields`, `Tally`: HINCRBY adds every replica's counts), and turns the
summed counters back into figures: agreement per field with its bounds (router/core/stats.py),
mean distances, a confusion matrix, latency quantiles (`summarize`); the noise
floor from a second copy of the primary (`noise_report`); and the bounded
sample of disagreements (`disagreement_record`). The counter layout is drawn in
router/core/compare.py's module docstring.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from router.core.compare import MICRO, OTHER, Comparison
from router.core.compare_kinds import FieldResult, FieldSpec
from router.core.jsonpath import MISSING
from router.core.protocols.base import kind_name
from router.core.stats import shown_bounds

# -- counters that add up across replicas ---------------------------------------


def _latency_bounds() -> tuple[float, ...]:
    """0.1 ms .. ~105 s, each bound 2^(1/4) ≈ 1.19x the last: a quantile read from
    the histogram is within 19 % of the true one."""
    return tuple(0.0001 * 2 ** (i / 4) for i in range(81))


LAT_BOUNDS: Final = _latency_bounds()

LabelFold = Callable[[str, str], str]  # (field, label) -> label, or OTHER past the bound


def escape(text: str) -> str:
    """Make a name safe inside a `|`-separated counter key."""
    return text.replace("%", "%25").replace("|", "%7C")


def unescape(text: str) -> str:
    return text.replace("%7C", "|").replace("%25", "%")


def counter_name(backend: str, settings: str = "") -> str:
    """The counter hash of the comparison of one mirror backend with the primary,
    under one way of comparing (`compare_id`): figures of another config are apart."""
    return f"cmp:{backend}@{settings}" if settings else f"cmp:{backend}"


def compare_id(protocol: str, fields: Sequence[FieldSpec]) -> str:
    """A short id of how a route compares (its protocol and compare list). Counters
    are kept per id, so a field dropped from the config, or read another way, never
    weighs on the figures of the new one: they start from zero after such an edit."""
    text = repr((protocol, tuple(fields)))
    return hashlib.blake2b(text.encode(), digest_size=3).hexdigest()


def latency_bucket(seconds: float) -> int:
    """Index into the histogram: bucket i holds latencies up to LAT_BOUNDS[i]."""
    return bisect_left(LAT_BOUNDS, seconds)


def tally_fields(
    comparison: Comparison, *, name: str = "cmp", fold: LabelFold | None = None
) -> dict[str, dict[str, int]]:
    """One comparison as increments of the counter hash `name` (see the layout in
    router/core/compare.py's docstring), ready for `StateStore.add_counters`. A
    comparison that could not be read counts only as not comparable, with why."""
    if comparison.not_comparable:
        return {name: {"nc": 1, f"nc|{escape(comparison.not_comparable[:120])}": 1}}
    c: dict[str, int] = {"n": 1}
    _add(c, "agree", comparison.agree)
    _add(c, "status_mismatch", not comparison.status_match)
    _add(c, "no_answer", comparison.status[1] == 0)
    _add(c, "body_mismatch", comparison.body_equal is False)
    _add(c, "p_not_json", "primary: not JSON" in comparison.errors)
    _add(c, "s_not_json", "shadow: not JSON" in comparison.errors)
    c["lat_delta_us"] = round(comparison.latency_delta * MICRO)
    c[f"lat|p|{latency_bucket(comparison.latency[0])}"] = 1
    if comparison.status[1] != 0:  # a shadow that never answered has no latency
        c[f"lat|s|{latency_bucket(comparison.latency[1])}"] = 1
    if comparison.items:
        c["items"] = len(comparison.items)
        _add(c, "items_agree", any(comparison.items), sum(comparison.items))
    _add(c, "batch", comparison.batch is not None)
    requests: dict[str, bool] = {}  # field -> all its items agreed, in this request
    for result in comparison.fields:
        _tally_field(c, result, fold)
        if result.counted:
            requests[result.field] = requests.get(result.field, True) and result.agree
    for field, ok in requests.items():
        _add(c, f"f|{escape(field)}|rq", True)
        _add(c, f"f|{escape(field)}|rq_agree", ok)
    return {name: c}


def _add(counters: dict[str, int], key: str, flag: bool, by: int = 1) -> None:
    if flag:
        counters[key] = counters.get(key, 0) + by


def _tally_field(c: dict[str, int], r: FieldResult, fold: LabelFold | None) -> None:
    """One item's result of one field (a request adds one per item)."""
    f = f"f|{escape(r.field)}|"
    if not r.counted:
        _add(c, f + "absent", True)
        return
    _add(c, f + "n", True)
    _add(c, f + "agree", r.agree)
    _add(c, f + r.reason, r.reason in ("missing", "type", "shape"))
    if r.reason == "missing":
        _add(c, f + "miss_s", r.shadow is MISSING)
    elif r.reason == "type":  # what the values were: the hint says it in words
        _add(c, f"{f}tt|{kind_name(r.primary)}|{kind_name(r.shadow)}", True)
    if r.diff is not None and math.isfinite(r.diff):
        _add(c, f + "diff_n", True)
        _add(c, f + "diff_u", True, round(r.diff * MICRO))
    if r.labels is not None:
        p, s = (fold(r.field, x) if fold else x for x in r.labels)
        _add(c, f"{f}cm|{escape(p)}|{escape(s)}", True)


class Tally:
    """In-process figures of one compared pair between two flushes to the store.

    Labels are bounded per field: the first `max_labels` distinct labels seen by
    this process keep their name, later ones become OTHER, so a model emitting
    free text cannot grow the counter hash without bound. Maxima cannot be added
    up by HINCRBY, so they stay here (reported per replica).
    """

    def __init__(self, name: str = "cmp", *, max_labels: int = 20) -> None:
        self.name = name
        self.max_labels = max_labels
        self.maxima: dict[str, float] = {}  # field -> largest distance seen
        self._labels: dict[str, set[str]] = {}
        self._pending: dict[str, int] = {}

    def fold(self, field: str, label: str) -> str:
        label = label[:64]  # long free text would only bloat key names
        known = self._labels.setdefault(field, set())
        if label in known:
            return label
        if len(known) < self.max_labels:
            known.add(label)
            return label
        return OTHER

    def add(self, comparison: Comparison) -> None:
        counters = tally_fields(comparison, name=self.name, fold=self.fold)[self.name]
        for key, value in counters.items():
            self._pending[key] = self._pending.get(key, 0) + value
        for r in comparison.fields:
            if r.diff is not None and r.diff > self.maxima.get(r.field, -math.inf):
                self.maxima[r.field] = r.diff

    def drain(self) -> dict[str, dict[str, int]]:
        """Increments since the last drain, for `add_counters`; {} when none."""
        pending, self._pending = self._pending, {}
        return {self.name: pending} if pending else {}

    def restore(self, drained: Mapping[str, Mapping[str, int]]) -> None:
        """Put back what a failed flush took, to go out with the next one."""
        for key, value in drained.get(self.name, {}).items():
            self._pending[key] = self._pending.get(key, 0) + value


# -- reading the sums back --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rate:
    """k out of n, with the bounds a gate decides on (router/core/stats.py `shown_bounds`)."""

    k: int
    n: int

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float]:
        return shown_bounds(self.k, self.n)

    def complement(self) -> Rate:
        return Rate(self.n - self.k, self.n)

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.interval
        return {"k": self.k, "n": self.n, "rate": self.value, "lo": lo, "hi": hi}


@dataclass(frozen=True, slots=True)
class FieldSummary:
    field: str
    agreement: Rate  # items that agree out of the items where a side had the field
    requests: Rate = Rate(0, 0)  # requests where every item of the field agreed
    missing: int = 0  # items one side lacked
    missing_shadow: int = 0  # ... of which the shadow lacked
    type_errors: int = 0  # type and shape
    shape: int = 0  # requests whose sides had not as many items (or vector lengths differ)
    absent: int = 0  # requests where neither side had the field
    mean_diff: float | None = None
    confusion: tuple[tuple[str, str, int], ...] = ()  # (primary, shadow, count), largest first
    types: tuple[tuple[str, str, int], ...] = ()  # type disagreements: (primary, shadow, count)

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "agreement": self.agreement.to_dict(),
            "requests": self.requests.to_dict(),
            "missing": self.missing,
            "missing_shadow": self.missing_shadow,
            "type_errors": self.type_errors,
            "shape": self.shape,
            "absent": self.absent,
            "mean_diff": self.mean_diff,
            "confusion": [list(cell) for cell in self.confusion],
            "types": [list(cell) for cell in self.types],
        }


@dataclass(frozen=True, slots=True)
class Summary:
    agreement: Rate  # items: same status, every field agrees on the item
    requests: Rate  # whole answers: same status, as many items, every item agrees
    status_mismatch: Rate
    no_answer: int
    body_mismatch: int
    not_json: tuple[int, int]  # (primary, shadow)
    latency_p50: tuple[float | None, float | None]  # (primary, shadow), seconds
    latency_p99: tuple[float | None, float | None]
    mean_latency_delta: float | None  # shadow - primary, seconds
    fields: dict[str, FieldSummary]
    batch_mismatch: int = 0  # requests whose answers had not as many items
    not_comparable: tuple[tuple[str, int], ...] = ()  # (why, requests), apart from n

    @property
    def n(self) -> int:
        """Requests compared."""
        return self.requests.n

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "items": self.agreement.n,
            "agreement": self.agreement.to_dict(),
            "requests": self.requests.to_dict(),
            "batch_mismatch": self.batch_mismatch,
            "not_comparable": dict(self.not_comparable),
            "status_mismatch": self.status_mismatch.to_dict(),
            "no_answer": self.no_answer,
            "body_mismatch": self.body_mismatch,
            "not_json": list(self.not_json),
            "latency_p50": list(self.latency_p50),
            "latency_p99": list(self.latency_p99),
            "mean_latency_delta": self.mean_latency_delta,
            "fields": {name: f.to_dict() for name, f in self.fields.items()},
        }


def summarize(counters: Mapping[str, int], *, top_labels: int = 20) -> Summary:
    """Rates, intervals, means, confusion matrices and latency quantiles from one
    counter hash summed over replicas (as `StateStore.read_counters` returns it)."""
    n = counters.get("n", 0)
    hist: dict[str, list[int]] = {"p": [0] * (len(LAT_BOUNDS) + 1), "s": []}
    hist["s"] = list(hist["p"])
    per_field: dict[str, dict[str, int]] = {}
    cells: dict[str, dict[tuple[str, str], int]] = {}
    types: dict[str, dict[tuple[str, str], int]] = {}
    nc: dict[str, int] = {}
    for key, value in counters.items():
        parts = key.split("|")
        if parts[0] == "lat" and len(parts) == 3 and parts[1] in hist:
            _bump_bucket(hist[parts[1]], parts[2], value)
        elif parts[0] == "f" and len(parts) == 3:
            per_field.setdefault(unescape(parts[1]), {})[parts[2]] = value
        elif parts[0] == "f" and len(parts) == 5 and parts[2] in ("cm", "tt"):
            cell = (unescape(parts[3]), unescape(parts[4]))
            table = cells if parts[2] == "cm" else types
            table.setdefault(unescape(parts[1]), {})[cell] = value
        elif parts[0] == "nc" and len(parts) == 2:
            nc[unescape(parts[1])] = value
    fields = {
        name: _field_summary(name, per_field.get(name, {}), cells.get(name, {}), top_labels)
        for name in sorted(per_field.keys() | cells.keys())
    }
    for name, found in types.items():
        if name in fields:
            fields[name] = replace(fields[name], types=_largest(found))
    return Summary(
        agreement=Rate(counters.get("items_agree", 0), counters.get("items", 0)),
        requests=Rate(counters.get("agree", 0), n),
        status_mismatch=Rate(counters.get("status_mismatch", 0), n),
        no_answer=counters.get("no_answer", 0),
        body_mismatch=counters.get("body_mismatch", 0),
        not_json=(counters.get("p_not_json", 0), counters.get("s_not_json", 0)),
        latency_p50=(quantile(hist["p"], 0.5), quantile(hist["s"], 0.5)),
        latency_p99=(quantile(hist["p"], 0.99), quantile(hist["s"], 0.99)),
        mean_latency_delta=counters.get("lat_delta_us", 0) / MICRO / n if n else None,
        fields=fields,
        batch_mismatch=counters.get("batch", 0),
        not_comparable=tuple(sorted(nc.items(), key=lambda kv: -kv[1])),
    )


def _largest(cells: Mapping[tuple[str, str], int]) -> tuple[tuple[str, str, int], ...]:
    ordered = sorted(cells.items(), key=lambda item: (-item[1], item[0]))
    return tuple((p, s, count) for (p, s), count in ordered)


def _bump_bucket(hist: list[int], index: str, value: int) -> None:
    if index.isdigit() and int(index) < len(hist):  # a foreign key must not crash a summary
        hist[int(index)] += value


def quantile(hist: Sequence[int], q: float) -> float | None:
    """The upper bound of the bucket holding the q-quantile; None when empty."""
    total = sum(hist)
    if total <= 0:
        return None
    rank, seen = q * total, 0
    for i, count in enumerate(hist):
        seen += count
        if seen >= rank and count:
            return LAT_BOUNDS[min(i, len(LAT_BOUNDS) - 1)]
    return LAT_BOUNDS[-1]


def _field_summary(
    name: str, c: Mapping[str, int], cells: Mapping[tuple[str, str], int], top: int
) -> FieldSummary:
    diff_n = c.get("diff_n", 0)
    return FieldSummary(
        field=name,
        agreement=Rate(c.get("agree", 0), c.get("n", 0)),
        requests=Rate(c.get("rq_agree", 0), c.get("rq", 0)),
        missing=c.get("missing", 0),
        missing_shadow=c.get("miss_s", 0),
        type_errors=c.get("type", 0) + c.get("shape", 0),
        shape=c.get("shape", 0),
        absent=c.get("absent", 0),
        mean_diff=c.get("diff_u", 0) / MICRO / diff_n if diff_n else None,
        confusion=fold_confusion(cells, top),
    )


def fold_confusion(
    cells: Mapping[tuple[str, str], int], top: int
) -> tuple[tuple[str, str, int], ...]:
    """Keep the `top` most frequent labels (either side), fold the rest into OTHER;
    the cells come out largest first. Each replica bounds its own labels, so the
    sum over replicas can hold more than `top`: this bounds what is shown."""
    totals: dict[str, int] = {}
    for (p, s), count in cells.items():
        totals[p] = totals.get(p, 0) + count
        totals[s] = totals.get(s, 0) + count
    keep = set(sorted(totals, key=lambda label: (-totals[label], label))[:top])
    folded: dict[tuple[str, str], int] = {}
    for (p, s), count in cells.items():
        cell = (p if p in keep else OTHER, s if s in keep else OTHER)
        folded[cell] = folded.get(cell, 0) + count
    ordered = sorted(folded.items(), key=lambda item: (-item[1], item[0]))
    return tuple((p, s, count) for (p, s), count in ordered)


# -- the noise floor ---------------------------------------------------------------

WHOLE: Final = "$"  # the noise report's name for whole-answer agreement


@dataclass(frozen=True, slots=True)
class NoiseField:
    field: str
    disagreement: Rate  # primary vs shadow
    noise: Rate  # primary vs secondary (same version as the primary)
    excess: float | None  # disagreement beyond the noise, clipped at 0
    noisy: bool  # the shadow's disagreement is not clearly above the noise


@dataclass(frozen=True, slots=True)
class NoiseReport:
    fields: dict[str, NoiseField]

    @property
    def noisy(self) -> bool:
        """True when any figure cannot be told apart from the noise floor."""
        return any(f.noisy for f in self.fields.values())


def noise_report(shadow: Summary, secondary: Summary) -> NoiseReport:
    """Compare primary-vs-shadow disagreement with primary-vs-secondary.

    A field is noisy when the lower bound of the shadow's disagreement
    does not exceed the upper bound of the secondary's: the difference could be
    the primary's own nondeterminism. With no secondary data its interval is
    (0, 1), so everything reads noisy until there is evidence.
    """
    pairs = {WHOLE: (shadow.agreement, secondary.agreement)}
    for name, f in shadow.fields.items():
        other = secondary.fields.get(name)
        pairs[name] = (f.agreement, other.agreement if other else Rate(0, 0))
    return NoiseReport({name: _noise(name, s, n) for name, (s, n) in pairs.items()})


def _noise(name: str, shadow_agree: Rate, noise_agree: Rate) -> NoiseField:
    dis, noise = shadow_agree.complement(), noise_agree.complement()
    excess = None
    if dis.value is not None and noise.value is not None:
        excess = max(0.0, dis.value - noise.value)
    noisy = dis.interval[0] <= noise.interval[1]
    return NoiseField(name, dis, noise, excess, noisy)
