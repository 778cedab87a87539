"""Binning a whole vector feature at once: every column of a batch in a few numpy calls.

A `vector` feature of D numbers is D columns, each with its own reference edges
(router/core/drift.py `Column.count_numbers`). Binning them one column at a time
costs D rounds of numpy calls per batch, which dominates for wide vectors (1,024
features: 1,024 searchsorted, where and bincount calls per batch). Here the
edges are padded into one (D, K) matrix (+inf past a column's last edge), so a
batch of rows is binned in K whole-batch comparisons and one bincount, with the
same bin rule as `count_numbers`: below the minimum, one bin per half-open
decile, exactly the maximum, above the maximum. Non-finite values are skipped
at their own index only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class MatrixBins:
    """The edges of D numeric columns, padded, ready to bin (n, D) batches."""

    __slots__ = ("edges", "last", "nbins", "width")

    def __init__(self, edges: Sequence[FloatArray]) -> None:
        k = max(len(e) for e in edges)
        padded = np.full((len(edges), k), np.inf)
        for j, e in enumerate(edges):
            padded[j, : len(e)] = e
        self.edges = padded
        self.last = np.asarray([e[-1] for e in edges], dtype=np.float64)
        self.nbins = np.asarray([len(e) + 2 for e in edges], dtype=np.int64)
        self.width = k + 2  # bins per column in the flat count

    def count(self, matrix: FloatArray) -> IntArray:
        """(D, width) counts of an (n, D) batch; column j uses its first nbins[j]."""
        d = len(self.last)
        # edges at or below each value, one edge rank at a time: K passes over (n, D)
        # are cheaper than one (n, D, K) boolean cube and its sum
        below_or_at = np.zeros(matrix.shape, dtype=np.int64)
        for k in range(self.edges.shape[1]):
            below_or_at += matrix >= self.edges[:, k]
        idx = np.where(matrix > self.last[None, :], self.nbins[None, :] - 1, below_or_at)
        flat = idx + (np.arange(d, dtype=np.int64) * self.width)[None, :]
        kept = flat[np.isfinite(matrix)]
        counts = np.bincount(kept, minlength=d * self.width)
        return counts.reshape(d, self.width).astype(np.int64)
