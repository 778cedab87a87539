"""`shadow`: the primary answers every request; shadows get a copy, never awaited.

    shadow:
      primary: model-v1
      shadows: [model-v2]
      percent: 100            # share of requests mirrored, 0..100, two decimals
      methods: [POST]         # default: every method
      max_body: 1MiB          # larger request bodies are not mirrored (counted)
      secondary: {backend: model-v1b, percent: 10}   # noise floor: a 2nd copy of the primary
      compare:
        - {field: $.label, kind: label}
        - {field: $.score, kind: number, abs: 0.01}
      float_tolerance: 1e-6   # whole-JSON compare when `compare` is empty
      sample_disagreements: {enabled: true, max: 100, ttl: 1h,
                             fields_only: false, store_request_body: false}
      rewrite: {model-v2: {json: {model: my-v2}}}   # per shadow: router/core/rewrite.py

Theory of operation. `decide` always names the primary; only the mirrors vary.
Whether a request is mirrored is decided from its 64-bit key, like every other
strategy, but NOT from `key % 10_000`: that bucket already places the user in a
split or a canary, and reusing it would mirror exactly the users of one side.
The key goes through a splitmix64-style finaliser, salted differently for the
shadows and for the secondary, and that second hash's bucket is compared with
the percentage. With a sticky route the same user is always (or never) mirrored,
on every replica; without one the key is random and so is the sample.

The four possible decisions (mirror nothing, the shadows, the secondary, both)
are built once, so `decide` allocates nothing. A route whose live rollout is
`paused` (routerctl pause) stops mirroring until resumed.

The comparison settings are parsed by router/core/compare_config.py (`parse_compare`), the
same parser the canary's agreement gate uses; the mirror workers read them
from `spec`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

from router.core.compare_config import parse_compare, read_real
from router.core.compare_kinds import FieldSpec
from router.core.confkit import basis_points
from router.core.rewrite import Rewrite, parse_rewrites, rewrite_for
from router.core.rollout import BASIS_POINTS
from strategies.base import Copies, Decision, StrategyKind, StrategySpec, check_backend

if TYPE_CHECKING:
    from router.core.confkit import Node
    from router.core.rollout import Rollout

_MASK64: Final = (1 << 64) - 1
_SHADOW_SALT: Final = 0x9E3779B97F4A7C15
_SECONDARY_SALT: Final = 0xD1B54A32D192ED03
_TOKEN: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 method token


def mirror_bucket(key: int, salt: int = _SHADOW_SALT) -> int:
    """A second bucket 0..9999 of the key, independent of `key % 10_000`."""
    x = (key ^ salt) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) % BASIS_POINTS


@dataclass(frozen=True, slots=True)
class SampleSpec:
    """Which disagreements are kept for `routerctl diffs`."""

    enabled: bool = True
    max: int = 100  # newest kept per route
    ttl: float = 3600.0  # seconds
    fields_only: bool = False  # keep only the compared fields' values
    store_request_body: bool = False


@dataclass(frozen=True, slots=True)
class ShadowSpec:
    primary: str
    shadows: tuple[str, ...]
    percent_bp: int = BASIS_POINTS
    methods: frozenset[str] | None = None  # upper case; None: every method
    max_body: int = 1024 * 1024
    secondary: str | None = None
    secondary_bp: int = 0
    compare: tuple[FieldSpec, ...] = ()
    float_tolerance: float = 1e-6
    samples: SampleSpec = SampleSpec()
    rewrite: tuple[tuple[str, Rewrite], ...] = ()  # per mirrored backend

    def backends(self) -> tuple[str, ...]:
        extra = (self.secondary,) if self.secondary else ()
        return (self.primary, *self.shadows, *extra)

    def rewrite_for(self, backend: str) -> Rewrite | None:
        """How a mirrored backend's copy is rewritten (None: sent as the client sent it)."""
        return rewrite_for(self.rewrite, backend)


class Shadow:
    """The built strategy: four prebuilt decisions and two thresholds."""

    __slots__ = (
        "_both",
        "_none",
        "_primary_only",
        "_second_bp",
        "_secondary",
        "_shadow_bp",
        "_shadows_only",
        "copies",
        "spec",
    )

    def __init__(self, spec: ShadowSpec) -> None:
        self.spec = spec
        methods = frozenset(m.encode() for m in spec.methods) if spec.methods else None
        self.copies = Copies(methods, spec.max_body)
        self._shadow_bp = spec.percent_bp
        self._second_bp = spec.secondary_bp if spec.secondary else 0
        second = (spec.secondary,) if spec.secondary else ()
        self._none = Decision(spec.primary, "shadow")
        self._shadows_only = Decision(spec.primary, "shadow", spec.shadows)
        self._secondary = Decision(spec.primary, "shadow", second)
        self._both = Decision(spec.primary, "shadow", spec.shadows + second)
        self._primary_only = {spec.primary: 100.0}

    @property
    def override_header(self) -> bytes | None:
        return None

    @property
    def secondary(self) -> str | None:
        """The noise-floor backend among the mirrors, if any."""
        return self.spec.secondary

    def backends(self) -> tuple[str, ...]:
        return self.spec.backends()

    def weights(self, live: Rollout | None) -> dict[str, float]:
        """Share of answers per backend, percent: the primary answers them all."""
        return dict(self._primary_only)

    def decide(self, key: int, live: Rollout | None, override: bytes | None) -> Decision:
        if live is not None and live.phase == "paused":
            return self._none
        # the hashes cost ~0.7 µs each: skip them when the answer is known
        bp = self._shadow_bp
        shadow = bp >= BASIS_POINTS or (bp > 0 and mirror_bucket(key) < bp)
        bp = self._second_bp
        second = bp >= BASIS_POINTS or (bp > 0 and mirror_bucket(key, _SECONDARY_SALT) < bp)
        if shadow:
            return self._both if second else self._shadows_only
        return self._secondary if second else self._none


def _percent_bp(node: Node, key: str, default: int) -> int:
    """A percentage 0..100 with at most two decimals, as basis points."""
    value = node.raw(key)
    if value is None:
        return default
    bp = basis_points(node, node.sub(key), value)
    return default if bp is None else bp


def _shadows(node: Node, known: frozenset[str], primary: str) -> tuple[str, ...]:
    items = node.items("shadows", required=True)
    if node.data.get("shadows") == []:
        node.error(node.sub("shadows"), "must name at least one backend")
    out: list[str] = []
    for path, name in items:
        if not isinstance(name, str) or not name:
            node.error(path, "must be a backend name", name)
        elif name not in known:
            node.error(path, "is not a backend defined under backends", name)
        elif name == primary or name in out:
            node.error(path, "is already the primary or listed before", name)
        else:
            out.append(name)
    return tuple(out)


def _methods(node: Node) -> frozenset[str] | None:
    if not node.has("methods"):
        return None
    out: set[str] = set()
    for path, method in node.items("methods"):
        if not isinstance(method, str) or not _TOKEN.match(method):
            node.error(path, "must be an HTTP method like POST", method)
        else:
            out.add(method.upper())
    return frozenset(out)


def _secondary(
    node: Node, known: frozenset[str], taken: tuple[str, ...], bp: int
) -> tuple[str | None, int]:
    if not node.has("secondary"):
        return None, 0
    block = node.mapping("secondary")
    name = check_backend(block, "backend", known)
    if name and name in taken:
        block.error(block.sub("backend"), "must differ from the primary and the shadows", name)
    share = _percent_bp(block, "percent", bp)  # default: the shadows' share
    block.done()
    return name or None, share


def _samples(node: Node) -> SampleSpec:
    block = node.mapping("sample_disagreements")
    spec = SampleSpec(
        enabled=block.boolean("enabled", True),
        max=block.integer("max", 100, 1, 100_000),
        ttl=block.duration("ttl", 3600.0),
        fields_only=block.boolean("fields_only", False),
        store_request_body=block.boolean("store_request_body", False),
    )
    block.done()
    return spec


def parse(node: Node, known: frozenset[str]) -> StrategySpec:
    """Read a `shadow:` block; every problem goes to node.errors with its path."""
    primary = check_backend(node, "primary", known)
    shadows = _shadows(node, known, primary)
    bp = _percent_bp(node, "percent", BASIS_POINTS)
    secondary, secondary_bp = _secondary(node, known, (primary, *shadows), bp)
    spec = ShadowSpec(
        primary=primary,
        shadows=shadows,
        percent_bp=bp,
        methods=_methods(node),
        max_body=node.size("max_body", 1024 * 1024),
        secondary=secondary,
        secondary_bp=secondary_bp,
        compare=parse_compare(node.items("compare"), node.errors),
        float_tolerance=read_real(node, "float_tolerance", 1e-6, 0.0, 1.0),
        samples=_samples(node),
    )
    mirrored = (*shadows, *((secondary,) if secondary else ()))
    spec = replace(spec, rewrite=parse_rewrites(node.mapping("rewrite"), mirrored, primary))
    node.done()
    return spec


def build(spec: StrategySpec) -> Shadow:
    if not isinstance(spec, ShadowSpec):
        raise TypeError(f"shadow cannot build from {type(spec).__name__}")
    return Shadow(spec)


SHADOW = StrategyKind("shadow", parse, build)
