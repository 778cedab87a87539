"""Data and prediction drift: binned counts of what users send and models answer.

Theory of operation.

*Features.* A `FeatureSpec` names one JSON field and its kind: `number` (a
scalar), `vector` (an array of numbers: EACH INDEX IS ITS OWN FEATURE, named
`name[i]`, because a shift in one dimension would drown in a flattened
histogram of all of them) or `category` (strings; numbers and booleans are
read as their text). The caller extracts the values, one per spec in spec
order, from the already parsed JSON (`extractor` compiles the paths once).
Values of the wrong type (None, MISSING, a string for a number), non-finite
numbers and vectors whose length differs from the reference's are not counted
(inside a vector numpy converts: a null element is skipped at its index only).

*Reference.* The first N observations after a reset (`Collector`), or samples
supplied by the operator, fix the bins once (`Reference.fit`): per numeric
feature the reference's deciles (duplicates merged, so a discrete feature has
fewer bins; its largest value gets a bin of its own) plus an underflow and an
overflow bin; per category feature the
top K reference categories plus "other". The reference keeps its own counts
in those bins. It serialises to JSON so every replica bins with the SAME edges.

*Window.* A `DriftTracker` counts into the same bins over a sliding window: a
ring of time slots (`Window.slots` of `slot_seconds`, slot id = now //
slot_seconds). Counts are integers per bin, so replicas add up: `drain()`
hands each slot's increments over for the state store's counter hashes
(`counter_fields`), and `counts_from_fields` sums what every replica wrote.

*Cost.* `observe` only appends raw values to Python lists; every `batch`
requests (and before any read) numpy bins them at once (searchsorted and
bincount), so the request path pays a few list appends.

*Scores* and the canary's *prediction gate*: router/core/drift_scores.py.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from router.core.drift_matrix import MatrixBins
from router.core.jsonpath import compile_path

KINDS = ("number", "vector", "category")
OTHER = "<other>"  # the bin of categories outside the reference's top K

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Counts = dict[str, list[int]]


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One watched JSON field: `path` is kept for display and extraction by the caller."""

    name: str
    path: str
    kind: str  # number | vector | category


@dataclass(frozen=True, slots=True)
class Window:
    """The sliding window: `slots` time slots of `slot_seconds` each."""

    slot_seconds: float = 10.0
    slots: int = 6

    def slot_of(self, now: float) -> int:
        return int(now // self.slot_seconds)

    def slot_ids(self, now: float) -> list[int]:
        """The ids of the slots inside the window at `now`, oldest first."""
        current = self.slot_of(now)
        return list(range(current - self.slots + 1, current + 1))


class Column:
    """One scored feature: its bins and the reference's counts in them."""

    __slots__ = ("categories", "edges", "kind", "lookup", "name", "nbins", "ref")

    def __init__(self, name: str, kind: str, edges: Sequence[float], categories: Sequence[str]):
        self.name = name
        self.kind = kind  # "number" or "category"
        self.edges = np.asarray(edges, dtype=np.float64)
        self.categories = tuple(categories)
        self.lookup = {c: i for i, c in enumerate(self.categories)}
        self.nbins = len(self.edges) + 2 if kind == "number" else len(self.categories) + 1
        self.ref: IntArray = np.zeros(self.nbins, dtype=np.int64)

    def count_numbers(self, values: FloatArray) -> IntArray:
        """Counts per bin: below the reference's min, one bin per half-open decile
        [e_i, e_i+1), exactly the max, above the max. The max has its own bin so a
        discrete feature's top value is not merged with the one below it."""
        idx = np.searchsorted(self.edges, values, side="right")
        idx = np.where(values > self.edges[-1], self.nbins - 1, idx)
        return np.bincount(idx, minlength=self.nbins).astype(np.int64)

    def count_labels(self, labels: Sequence[str]) -> IntArray:
        other = self.nbins - 1
        idx = [self.lookup.get(label, other) for label in labels]
        return np.bincount(np.asarray(idx, dtype=np.int64), minlength=self.nbins)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "edges": self.edges.tolist(),
            "categories": list(self.categories),
            "ref": self.ref.tolist(),
        }


# -- turning raw JSON values into arrays ---------------------------------------


def _numbers(values: Iterable[object]) -> FloatArray:
    """Finite floats from raw values; bools, strings, None, MISSING are dropped."""
    kept = [v for v in values if type(v) is float or type(v) is int]
    arr = np.asarray(kept, dtype=np.float64)
    return arr[np.isfinite(arr)]


def _labels(values: Iterable[object]) -> list[str]:
    # JSON's spelling for booleans, so a label true/false reads as it was sent
    out: list[str] = []
    for v in values:
        if type(v) is str:
            out.append(v)
        elif type(v) is bool:
            out.append("true" if v else "false")
        elif type(v) is int or type(v) is float:
            out.append(str(v))
    return out


def _rows(values: Iterable[object], dims: int) -> FloatArray:
    """A (n, dims) float matrix of the vectors of the right length."""
    rows = [v for v in values if type(v) is list and len(v) == dims]
    try:
        arr = np.asarray(rows, dtype=np.float64).reshape(len(rows), dims)
    except (TypeError, ValueError):  # a non-number inside: filter row by row
        rows = [r for r in rows if all(type(x) is float or type(x) is int for x in r)]
        arr = np.asarray(rows, dtype=np.float64).reshape(len(rows), dims)
    return arr


# -- the reference ---------------------------------------------------------------


def _numeric_column(name: str, values: FloatArray, bins: int) -> Column:
    if values.size == 0:
        edges: Sequence[float] = [0.0]  # nothing seen: one point, every value is off it
    else:
        edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1))).tolist()
    col = Column(name, "number", edges, ())
    col.ref = col.count_numbers(values)
    return col


def _category_column(name: str, labels: list[str], top_k: int) -> Column:
    ranked = sorted(Counter(labels).items(), key=lambda kv: (-kv[1], kv[0]))
    col = Column(name, "category", (), [label for label, _ in ranked[:top_k]])
    col.ref = col.count_labels(labels)
    return col


def _vector_dims(values: Iterable[object]) -> int:
    """The most common length of the reference's vectors (0 if none)."""
    lengths = Counter(len(v) for v in values if type(v) is list and v)
    return lengths.most_common(1)[0][0] if lengths else 0


class Reference:
    """Bins fixed from reference samples, with the reference's counts."""

    __slots__ = ("_matrices", "columns", "dims", "specs")

    def __init__(self, specs: Sequence[FeatureSpec], dims: Sequence[int], columns: list[Column]):
        self.specs = tuple(specs)
        self.dims = tuple(dims)  # vector length per spec (1 for scalars)
        self.columns = columns
        self._matrices: dict[int, MatrixBins] = {}

    def matrix_bins(self, first: int, dims: int) -> MatrixBins:
        """The padded edges of the vector whose columns start at `first` (made once)."""
        found = self._matrices.get(first)
        if found is None:
            edges = [c.edges for c in self.columns[first : first + dims]]
            found = self._matrices[first] = MatrixBins(edges)
        return found

    @classmethod
    def fit(
        cls,
        specs: Sequence[FeatureSpec],
        samples: Sequence[Sequence[object]],
        bins: int = 10,
        top_k: int = 10,
    ) -> Reference:
        """Bins from samples: each sample holds one raw value per spec, in order."""
        columns: list[Column] = []
        dims: list[int] = []
        for i, spec in enumerate(specs):
            raw = [s[i] for s in samples]
            if spec.kind == "vector":
                dims.append(_vector_dims(raw))
                matrix = _rows(raw, dims[-1])
                for j in range(dims[-1]):
                    col = matrix[:, j]
                    columns.append(
                        _numeric_column(f"{spec.name}[{j}]", col[np.isfinite(col)], bins)
                    )
            else:
                dims.append(1)
                if spec.kind == "number":
                    columns.append(_numeric_column(spec.name, _numbers(raw), bins))
                else:
                    columns.append(_category_column(spec.name, _labels(raw), top_k))
        return cls(specs, dims, columns)

    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def to_json(self) -> str:
        return json.dumps(
            {
                "specs": [[s.name, s.path, s.kind] for s in self.specs],
                "dims": list(self.dims),
                "columns": [c.to_dict() for c in self.columns],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Reference:
        data = json.loads(text)
        columns = []
        for c in data["columns"]:
            col = Column(c["name"], c["kind"], c["edges"], c["categories"])
            col.ref = np.asarray(c["ref"], dtype=np.int64)
            columns.append(col)
        specs = [FeatureSpec(n, p, k) for n, p, k in data["specs"]]
        return cls(specs, data["dims"], columns)


def extractor(specs: Sequence[FeatureSpec]) -> Callable[[object], tuple[object, ...]]:
    """Compile the specs' JSON paths once: doc -> one raw value per spec."""
    paths = [compile_path(s.path) for s in specs]

    def extract(doc: object) -> tuple[object, ...]:
        return tuple(p.get(doc) for p in paths)

    return extract


class Collector:
    """The first `size` observations after a reset, then a fitted Reference."""

    def __init__(self, specs: Sequence[FeatureSpec], size: int = 2000) -> None:
        self.specs = tuple(specs)
        self.size = size
        self.samples: list[Sequence[object]] = []

    def observe(self, values: Sequence[object]) -> bool:
        """Keep one observation; True once the reference is complete."""
        if len(self.samples) < self.size:
            self.samples.append(values)
        return len(self.samples) >= self.size

    def reference(self, bins: int = 10, top_k: int = 10) -> Reference:
        return Reference.fit(self.specs, self.samples, bins, top_k)


# -- the live window ---------------------------------------------------------------


class DriftTracker:
    """Counts of one stream (a route's inputs, or one backend's outputs) per slot."""

    def __init__(
        self, reference: Reference, window: Window | None = None, now: float = 0.0, batch: int = 256
    ) -> None:
        self.reference = reference
        self.window = window or Window()
        self.batch = batch
        self.skipped = 0  # vectors of the wrong length seen (a schema change shows here)
        self._buffers: list[list[object]] = [[] for _ in reference.specs]
        self._pending = 0
        self._slot = self.window.slot_of(now)
        self._ring: dict[int, list[IntArray]] = {self._slot: self._zeros()}
        self._deltas: dict[int, list[IntArray]] = {}

    def observe(self, values: Sequence[object]) -> None:
        """One request's raw values, one per spec; cheap: numpy runs every `batch`."""
        for buffer, value in zip(self._buffers, values, strict=False):
            buffer.append(value)
        self._pending += 1
        if self._pending >= self.batch:
            self.flush()

    def advance(self, now: float) -> None:
        """Move the window to `now` (call about once a second); old slots fall off."""
        slot = self.window.slot_of(now)
        if slot <= self._slot:  # same slot, or a clock step back: stay put
            return
        self.flush()  # buffered values belong to the slot they arrived in
        self._slot = slot
        self._ring.setdefault(slot, self._zeros())
        oldest = slot - self.window.slots + 1
        for old in [s for s in self._ring if s < oldest]:
            del self._ring[old]

    def flush(self) -> None:
        """Bin every buffered value into the current slot."""
        if self._pending == 0:
            return
        counts = self._ring[self._slot]
        deltas = self._deltas.setdefault(self._slot, self._zeros())
        for col, added in self._bin_buffers():
            counts[col] += added
            deltas[col] += added
        self._buffers = [[] for _ in self.reference.specs]
        self._pending = 0

    def counts(self) -> Counts:
        """Per feature, the bin counts over the whole window (this replica only)."""
        self.flush()
        total = self._zeros()
        for slot in self._ring.values():
            for i, arr in enumerate(slot):
                total[i] += arr
        return {c.name: total[i].tolist() for i, c in enumerate(self.reference.columns)}

    def drain(self) -> dict[int, Counts]:
        """Increments since the last drain, per slot id: what to add to the store."""
        self.flush()
        names = self.reference.names()
        out = {
            slot: {names[i]: arr.tolist() for i, arr in enumerate(arrs) if arr.any()}
            for slot, arrs in self._deltas.items()
        }
        self._deltas = {}
        return out

    def _zeros(self) -> list[IntArray]:
        return [np.zeros(c.nbins, dtype=np.int64) for c in self.reference.columns]

    def _bin_buffers(self) -> Iterable[tuple[int, IntArray]]:
        """(column index, counts) for every column, from the raw buffers."""
        ref = self.reference
        col = 0
        for spec, dims, buffer in zip(ref.specs, ref.dims, self._buffers, strict=True):
            if spec.kind == "vector":
                matrix = _rows(buffer, dims)
                self.skipped += sum(1 for v in buffer if type(v) is list) - len(matrix)
                counts = ref.matrix_bins(col, dims).count(matrix)  # all columns at once
                for j in range(dims):
                    yield col + j, counts[j, : ref.columns[col + j].nbins]
                col += dims
            elif spec.kind == "number":
                yield col, ref.columns[col].count_numbers(_numbers(buffer))
                col += 1
            else:
                yield col, ref.columns[col].count_labels(_labels(buffer))
                col += 1


# -- sharing counts through the state store's counter hashes ------------------------


def counter_fields(counts: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """`feature#bin` -> count, non-zero bins only: one counter hash's fields."""
    return {f"{name}#{i}": n for name, bins in counts.items() for i, n in enumerate(bins) if n}


def counts_from_fields(reference: Reference, hashes: Iterable[Mapping[str, int]]) -> Counts:
    """Sum counter hashes (every replica, every slot of the window) into counts.

    Fields of features or bins the reference does not have (written under an
    older reference) are ignored rather than misread."""
    out = {c.name: [0] * c.nbins for c in reference.columns}
    for fields in hashes:
        for key, n in fields.items():
            name, _, index = key.rpartition("#")
            bins = out.get(name)
            if bins is not None and index.isdigit() and int(index) < len(bins):
                bins[int(index)] += int(n)
    return out


# -- the micro benchmark `make bench` calls ----------------------------------------------


def measure_observe_cost(n: int = 100_000) -> float:
    """µs per request of `observe` (amortised binning included): 8-number vector + label."""
    rng = np.random.default_rng(7)
    specs = [
        FeatureSpec("features", "$.features", "vector"),
        FeatureSpec("kind", "$.kind", "category"),
    ]
    labels = ["a", "b", "c", "d"]
    rows = [
        (rng.normal(size=8).tolist(), labels[int(i) % 4]) for i in rng.integers(0, 4, size=2000)
    ]
    tracker = DriftTracker(Reference.fit(specs, rows))
    requests = [rows[i % len(rows)] for i in range(n)]
    start = time.perf_counter()
    for values in requests:
        tracker.observe(values)
    tracker.flush()
    return (time.perf_counter() - start) / n * 1e6
