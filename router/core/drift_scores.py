"""Drift scores and the canary's prediction gate, from binned counts (router/core/drift.py).

*Scores.* Per feature: PSI between current and reference proportions (each
floored at `EPSILON` so an empty bin does not give infinity), the
Jensen-Shannon distance (base 2, in 0..1) and the Kolmogorov-Smirnov
statistic from the binned CDFs: evaluated at the bin edges only, so it is a
lower bound of the raw-value KS, short by at most one bin's mass (numbers
only; categories have no order). An alarm needs PSI >= threshold (0.2) and at
least `min_n` (500) values in the window: below it noise dominates.

*Prediction gate.* The same trackers on output fields, one per backend, give
candidate and stable counts over the same window; `prediction_gate` fails when
their PSI crosses the threshold and is beyond sampling noise (PSI times the
effective sample size is about chi-square under no change), passes when both
have `min_n` values and no feature fails, and otherwise waits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from router.core.drift import FloatArray, IntArray, Reference

EPSILON = 1e-4  # floor of a bin's proportion in PSI


# -- scores ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeatureScore:
    name: str
    psi: float
    js: float
    ks: float | None  # None for categories: their bins have no order
    n: int  # values in the current window
    threshold: float
    alarm: bool


def _proportions(counts: Sequence[int] | IntArray) -> FloatArray:
    arr = np.asarray(counts, dtype=np.float64)
    total = arr.sum()
    return arr / total if total > 0 else arr


def psi(current: Sequence[int] | IntArray, expected: Sequence[int] | IntArray) -> float:
    """Population stability index of two count vectors over the same bins."""
    p = np.maximum(_proportions(current), EPSILON)
    q = np.maximum(_proportions(expected), EPSILON)
    return float(np.sum((p - q) * np.log(p / q)))


def js_distance(current: Sequence[int] | IntArray, expected: Sequence[int] | IntArray) -> float:
    """Jensen-Shannon distance (base 2): 0 same, 1 disjoint."""
    p, q = _proportions(current), _proportions(expected)
    m = (p + q) / 2

    def kl(a: FloatArray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def ks_binned(current: Sequence[int] | IntArray, expected: Sequence[int] | IntArray) -> float:
    """Largest gap between the two CDFs at the bin edges."""
    gap = np.cumsum(_proportions(current)) - np.cumsum(_proportions(expected))
    return float(np.max(np.abs(gap))) if gap.size else 0.0


def scores(
    reference: Reference,
    counts: Mapping[str, Sequence[int]],
    threshold: float = 0.2,
    min_n: int = 500,
) -> list[FeatureScore]:
    """One score per reference feature; features with no counts have n = 0."""
    out = []
    for col in reference.columns:
        current = np.asarray(counts.get(col.name, [0] * col.nbins), dtype=np.int64)
        n = int(current.sum())
        value = psi(current, col.ref) if n else 0.0
        js = js_distance(current, col.ref) if n else 0.0
        ks = (ks_binned(current, col.ref) if n else 0.0) if col.kind == "number" else None
        alarm = n >= min_n and value >= threshold
        out.append(FeatureScore(col.name, value, js, ks, n, threshold, alarm))
    return out


# -- the canary's prediction gate -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GateResult:
    verdict: str  # "pass" | "fail" | "wait"
    psi: float  # the worst feature's PSI
    feature: str  # the worst feature ("" when nothing counted)
    n_candidate: int
    n_stable: int


def chi2_critical(df: int, z: float = 3.09) -> float:
    """Upper chi-square quantile (Wilson-Hilferty); z 3.09 is one-sided 0.001."""
    k = max(df, 1)
    return float(k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3)


def _noise_beaten(value: float, cand: IntArray, stable: IntArray) -> bool:
    """PSI beyond what two samples of these sizes show by chance (p < 0.001)."""
    n1, n2 = int(cand.sum()), int(stable.sum())
    used = int(np.count_nonzero(cand + stable))
    return value * (n1 * n2 / (n1 + n2)) > chi2_critical(used - 1)


def prediction_gate(
    candidate_counts: Mapping[str, Sequence[int]],
    stable_counts: Mapping[str, Sequence[int]],
    threshold: float = 0.2,
    min_n: int = 200,
) -> GateResult:
    """Candidate vs stable answers over the same window and bins.

    fail: some feature with `min_n` answers on both sides has PSI >= threshold
    beyond sampling noise; pass: every feature has `min_n` on both sides and
    none fails; wait: otherwise (never "pass" on too little data)."""
    worst = GateResult("wait", 0.0, "", 0, 0)
    failed, enough = False, bool(candidate_counts)
    for name, bins in candidate_counts.items():
        cand = np.asarray(bins, dtype=np.int64)
        stable = np.asarray(stable_counts.get(name, [0] * len(bins)), dtype=np.int64)
        n1, n2 = int(cand.sum()), int(stable.sum())
        if min(n1, n2) < min_n:
            enough = False
            continue
        value = psi(cand, stable)
        failed = failed or (value >= threshold and _noise_beaten(value, cand, stable))
        if value >= worst.psi:
            worst = GateResult("wait", value, name, n1, n2)
    verdict = "fail" if failed else "pass" if enough else "wait"
    return GateResult(verdict, worst.psi, worst.feature, worst.n_candidate, worst.n_stable)
