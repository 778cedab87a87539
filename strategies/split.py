"""`split`: fixed weights between backends, sticky per user.

    split: {weights: {iris-v1: 90, iris-v2: 10}, override_header: X-Backend}

Theory of operation. Weights are percentages with up to two decimals, held as
basis points (1 bp = 0.01 %) that sum to 10 000. Each request's 64-bit sticky
key falls into one bucket, `key % 10_000`; the backends own consecutive ranges
of buckets, in name order, so `decide` is one bisect over a precomputed tuple
of range ends. The same key gives the same backend in every process, and with
two backends raising one's weight only moves buckets into it.

Backends are laid out in name order, not YAML order, so reordering the keys of
`weights` in an edit moves nobody. A backend with weight 0 owns no bucket but
can still be forced through the override header (a tester's way in).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import TYPE_CHECKING

from router.core.confkit import basis_points
from router.core.rollout import BASIS_POINTS
from strategies.base import EVERY_COPY, Decision, StrategyKind, StrategySpec

if TYPE_CHECKING:
    from router.core.confkit import Node
    from router.core.rollout import Rollout


@dataclass(frozen=True, slots=True)
class SplitSpec:
    """Weights in basis points, sorted by backend name."""

    weights: tuple[tuple[str, int], ...]
    override_header: str | None = None  # lower case

    def backends(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.weights)


class Split:
    """The built strategy: range ends and owners, ready for bisect."""

    __slots__ = ("_backends", "_chosen", "_ends", "_forced_to", "_override", "_percent", "copies")

    def __init__(self, spec: SplitSpec) -> None:
        self.copies = EVERY_COPY
        owners = [(name, bp) for name, bp in spec.weights if bp > 0]
        ends: list[int] = []
        total = 0
        for _, bp in owners:
            total += bp
            ends.append(total)
        self._ends = tuple(ends)
        # every Decision is built once here: a frozen dataclass costs ~0.4 µs to make
        self._chosen = tuple(Decision(name, "split") for name, _ in owners)
        self._backends = spec.backends()
        self._forced_to = {name: Decision(name, "override") for name in self._backends}
        self._percent = {name: bp / 100 for name, bp in spec.weights}
        self._override = spec.override_header.encode() if spec.override_header else None

    @property
    def override_header(self) -> bytes | None:
        return self._override

    def backends(self) -> tuple[str, ...]:
        return self._backends

    def weights(self, live: Rollout | None) -> dict[str, float]:
        """Percent per backend, for status pages; a split has no live state."""
        return dict(self._percent)

    def decide(self, key: int, live: Rollout | None, override: bytes | None) -> Decision:
        if override is not None and (forced := self._forced(override)) is not None:
            return forced
        # bucket b belongs to the first range whose end is above b
        return self._chosen[bisect_right(self._ends, key % BASIS_POINTS)]

    def _forced(self, override: bytes) -> Decision | None:
        # unknown values are ignored, as if the header were absent
        return self._forced_to.get(override.decode("latin-1").strip())


def _read_weights(node: Node, known: frozenset[str]) -> tuple[list[tuple[str, int]], bool]:
    """(name, bp) pairs, and whether every weight was a valid number."""
    weights = node.mapping("weights", required=True)
    if weights.ok and not weights.data:
        node.error(weights.path, "must name at least one backend")
    out: list[tuple[str, int]] = []
    for key in list(weights.keys()):
        name, path = str(key), weights.sub(str(key))
        weights.raw(key)
        if name not in known:
            node.error(path, "is not a backend defined under backends", name)
        bp = basis_points(node, path, weights.data[key])
        if bp is not None:
            out.append((name, bp))
    return out, weights.ok and len(out) == len(weights.data)


def parse(node: Node, known: frozenset[str]) -> StrategySpec:
    """Read a `split:` block; every problem goes to node.errors with its path."""
    weights, complete = _read_weights(node, known)
    total = sum(bp for _, bp in weights)
    # a sum over half-read weights would only repeat the errors already reported
    if complete and weights and total != BASIS_POINTS:
        node.error(node.sub("weights"), f"must sum to 100, got {total / 100:g}")
    header = node.header("override_header")
    node.done()
    return SplitSpec(tuple(sorted(weights)), header)


def build(spec: StrategySpec) -> Split:
    if not isinstance(spec, SplitSpec):
        raise TypeError(f"split cannot build from {type(spec).__name__}")
    return Split(spec)


SPLIT = StrategyKind("split", parse, build)
