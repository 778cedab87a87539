"""`canary`: a sticky, growing share of users on a candidate, judged by gates.

    canary:
      stable: iris-v1
      candidate: iris-v2
      override_header: X-Canary            # values: always | never
      steps: [{weight: 5, pause: 2m, min_requests: 500}, {weight: 25, pause: 5m}, {weight: 100}]
      # or: ramp: {policy: exponential, start: 1, factor: 2, max: 100, pause: 1m}
      analysis: {interval: 2s, error_rate: {}, latency: {p99_ratio: 1.5},
                 agreement: {field: $.label, min: 0.95, min_requests: 200,
                             mirror_percent: 100, dry_run: false}}
      compare: [{field: $.label, kind: label}]   # as under shadow; see router/core/compare.py
      shadow_first: {percent: 100, min_requests: 500, min_agreement: 0.95, field: $.label}
      rewrite: {iris-v2: {json: {model: v2}}}    # the candidate's requests: router/core/rewrite.py

Theory of operation. The spec lists the steps; the live `Rollout` (written by
the controller through router/control/canary_machine.py) says which step is current and the
candidate's weight in basis points. `decide` is then one comparison: a request
goes to the candidate when `key % 10_000 < weight_bp`. Raising the weight only
adds buckets below the line, so a ramp only moves users into the candidate.

Steps. Weights are percentages with up to two decimals, strictly increasing.
Each step below 100 % is a window the gates judge; passing the last such step
promotes the candidate. A final `{weight: 100}` step is therefore the promotion
itself (a 100 % window would leave the stable nothing to be compared with), and
its pause is not used. A ramp expands into steps: start, then start*factor (or
start+step) ... and always ends at `max`.

Whose state counts. Live state applies only when it is a canary for this spec's
candidate; otherwise (no state yet, or a new candidate the controller has not
reconciled) everybody stays on the stable backend. After a promotion the live
`stable` is the promoted candidate and takes every request; after an abort or a
rollback the live `stable` (the old one) takes every request. The override
header wins in every phase so a tester can reach an aborted candidate.

Mirrors. The `agreement` gate and the shadow-first phase judge the candidate on
the same requests as the stable backend: a request the STABLE backend answers
is also mirrored to the candidate (never awaited; router/shadow/mirror.py compares the
two answers with the `compare` settings and counts per rollout window). A
request the candidate answers has nothing to be compared with and is not
mirrored. Whether a stable-served request is mirrored comes from a second hash
of the key (strategies/shadow.py `mirror_bucket`), not from `key % 10_000`,
which already splits the users: reusing it would mirror one slice of users only.
An agreement field (`field: $.path` or `output: NAME`) not listed under
`compare` is compared as a label (equality); `$` means the whole answer.

Shadow first. With `shadow_first`, a new rollout (and a retry) starts in the
`waiting` phase at weight 0: every request goes to the stable backend and
`percent` of them are mirrored. Only when enough comparisons show enough
agreement does the controller open step 1 (router/control/canary_machine.py); clearly too
little agreement aborts before any user reached the candidate. Weight 0 while
ramping happens only there (every step's weight is above 0), so `decide` tells
the phase by the weight alone.

Every Decision `decide` can return is built once, in `__init__`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final

from router.core.analysis import AnalysisSpec, parse_analysis
from router.core.compare_config import parse_compare
from router.core.compare_kinds import FieldSpec
from router.core.confkit import Node, basis_points
from router.core.gates import WHOLE_ANSWER, AgreementGate, agreement_field
from router.core.rewrite import Rewrite, parse_rewrites, rewrite_for
from router.core.rollout import BASIS_POINTS
from strategies.base import EVERY_COPY, Decision, StrategyKind, StrategySpec, check_backend
from strategies.shadow import ShadowSpec, mirror_bucket

if TYPE_CHECKING:
    from router.core.rollout import Rollout

_MAX_STEPS: Final = 100  # a ramp with a tiny step must not expand into thousands


@dataclass(frozen=True, slots=True)
class StepSpec:
    weight_bp: int  # candidate share in basis points
    pause: float = 0.0  # seconds the step lasts at least
    min_requests: int = 0  # candidate requests the step needs before advancing


@dataclass(frozen=True, slots=True)
class ShadowFirstSpec:
    """Mirror only, no user traffic, until `gate` passes; then step 1."""

    percent_bp: int = BASIS_POINTS  # share of requests mirrored to the candidate
    gate: AgreementGate = field(default_factory=lambda: AgreementGate(min_requests=500))


@dataclass(frozen=True, slots=True)
class CanarySpec:
    stable: str
    candidate: str
    steps: tuple[StepSpec, ...]
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)
    override_header: str = "x-canary"  # lower case
    compare: tuple[FieldSpec, ...] = ()  # how mirrored answers are compared
    shadow_first: ShadowFirstSpec | None = None
    rewrite: tuple[tuple[str, Rewrite], ...] = ()  # the candidate's, when it has one

    def backends(self) -> tuple[str, ...]:
        return (self.stable, self.candidate)

    def rewrite_for(self, backend: str) -> Rewrite | None:
        """The candidate's requests (served or mirrored) may be rewritten; stable's never."""
        return rewrite_for(self.rewrite, backend)

    @property
    def agreement_gates(self) -> tuple[AgreementGate, ...]:
        """The ramp's agreement gates (shadow first's gate is apart)."""
        return tuple(g for g in self.analysis.gates if isinstance(g, AgreementGate))

    @property
    def agreement_fields(self) -> tuple[str, ...]:
        """Every field whose agreement some gate reads, in order, once."""
        first = (self.shadow_first.gate,) if self.shadow_first else ()
        return tuple(dict.fromkeys(g.field for g in (*self.agreement_gates, *first)))

    @property
    def ramp_mirror_bp(self) -> int:
        """Share of stable-served requests mirrored while ramping (0: none)."""
        return max((g.mirror_bp for g in self.agreement_gates), default=0)

    @property
    def last_window(self) -> int:
        """Index of the last step judged by gates (the one before any 100 % step)."""
        below = [i for i, s in enumerate(self.steps) if s.weight_bp < BASIS_POINTS]
        return below[-1] if below else 0


class Canary:
    """The built strategy; every Decision it can return is made once, here."""

    __slots__ = (
        "_backends",
        "_candidate",
        "_decisions",
        "_first",
        "_first_bp",
        "_override",
        "_ramp",
        "_ramp_bp",
        "_settled",
        "compare_settings",
        "copies",
        "spec",
    )

    def __init__(self, spec: CanarySpec) -> None:
        self.copies = EVERY_COPY
        self.spec = spec
        self._candidate = spec.candidate
        self._backends = spec.backends()
        self._override = spec.override_header.encode()
        rw = spec.rewrite_for(spec.candidate)  # every decision serving the candidate has it
        self._decisions = {
            "canary": Decision(spec.candidate, "canary", rewrite=rw),
            "stable": Decision(spec.stable, "stable"),
            "always": Decision(spec.candidate, "override", rewrite=rw),
            "never": Decision(spec.stable, "override"),
        }
        # (not mirrored, mirrored) answers of the stable backend, while ramping and in
        # shadow first
        mirror = (spec.candidate,)
        self._ramp = (self._decisions["stable"], Decision(spec.stable, "stable", mirror))
        self._first = (
            Decision(spec.stable, "shadow_first"),
            Decision(spec.stable, "shadow_first", mirror),
        )
        self._ramp_bp = spec.ramp_mirror_bp
        self._first_bp = spec.shadow_first.percent_bp if spec.shadow_first else 0
        # what router/shadow/mirror.py compares the candidate's mirrored answers with
        self.compare_settings = ShadowSpec(
            primary="", shadows=(), compare=spec.compare, rewrite=spec.rewrite
        )
        # keyed by backend (after an abort) and "+backend" (after a promotion)
        self._settled = {
            b: Decision(b, "aborted", rewrite=spec.rewrite_for(b)) for b in self._backends
        }
        self._settled |= {
            f"+{b}": Decision(b, "promoted", rewrite=spec.rewrite_for(b)) for b in self._backends
        }

    @property
    def override_header(self) -> bytes | None:
        return self._override

    def backends(self) -> tuple[str, ...]:
        return self._backends

    def decide(self, key: int, live: Rollout | None, override: bytes | None) -> Decision:
        if override is not None and (forced := self._forced(override)) is not None:
            return forced
        if live is None or not self._applies(live):
            return self._decisions["stable"]
        if live.phase == "promoted":
            return self._settled["+" + self._home(live.stable, self._candidate)]
        if live.phase == "aborted":
            return self._settled[self._home(live.stable, self.spec.stable)]
        if key % BASIS_POINTS < live.weight_bp:
            return self._decisions["canary"]
        if live.weight_bp == 0:  # shadow first: see the module docstring
            return self._first[_mirrored(key, self._first_bp)]
        return self._ramp[_mirrored(key, self._ramp_bp)]

    def _applies(self, live: Rollout) -> bool:
        return live.kind == "canary" and live.candidate == self._candidate

    def _forced(self, override: bytes) -> Decision | None:
        word = override.strip().lower()
        if word == b"always":
            return self._decisions["always"]
        if word == b"never":
            return self._decisions["never"]
        return None  # other values are ignored, as if the header were absent

    def _home(self, live_stable: str, fallback: str) -> str:
        # a stored name outside this spec (stale state) must never reach the proxy
        return live_stable if live_stable in self._backends else fallback

    def weights(self, live: Rollout | None) -> dict[str, float]:
        """Percent of requests per backend, for status display."""
        share = dict.fromkeys(self._backends, 0.0)
        if live is None or not self._applies(live):
            return share | {self.spec.stable: 100.0}
        if live.phase in ("promoted", "aborted"):
            return share | {self.decide(0, live, None).primary: 100.0}
        bp = max(0, min(live.weight_bp, BASIS_POINTS))
        return {self.spec.stable: (BASIS_POINTS - bp) / 100, self.spec.candidate: bp / 100}


def _mirrored(key: int, bp: int) -> bool:
    # the second hash costs ~0.7 µs: skip it when the answer is known
    return bp >= BASIS_POINTS or (bp > 0 and mirror_bucket(key) < bp)


# -- parsing -------------------------------------------------------------------
def _weight(node: Node, key: str, default: float | None = None) -> int | None:
    """A percentage 0..100 with at most two decimals, as basis points."""
    value, path = node.raw(key), node.sub(key)
    if value is None:
        if default is None:
            node.error(path, "is required")
            return None
        value = default
    return basis_points(node, path, value)


def _step(node: Node) -> StepSpec | None:
    bp = _weight(node, "weight")
    pause = node.duration("pause", 0.0, positive=False)
    min_requests = node.integer("min_requests", 0, 0, 10**9)
    node.done()
    return None if bp is None else StepSpec(bp, pause, min_requests)


def _read_steps(node: Node) -> list[StepSpec]:
    steps: list[StepSpec] = []
    items = node.items("steps")
    if node.has("steps") and not items and isinstance(node.data.get("steps"), list):
        node.error(node.sub("steps"), "must list at least one step")
    for path, item in items:
        step = _step(_node(node, item, path))
        if step is not None and steps and step.weight_bp <= steps[-1].weight_bp:
            prior = steps[-1].weight_bp / 100
            node.error(
                f"{path}.weight",
                f"must be above the previous step's {prior:g}",
                step.weight_bp / 100,
            )
        elif step is not None:
            steps.append(step)
    return steps


def _node(parent: Node, value: object, path: str) -> Node:
    return Node(value, path, parent.errors)


def _read_ramp(node: Node) -> list[StepSpec]:
    ramp = node.mapping("ramp")
    policy = ramp.choice("policy", "exponential", ("exponential", "linear"))
    start = _weight(ramp, "start", 1)
    top = _weight(ramp, "max", 100)
    factor = ramp.number("factor", 2.0, 1.01, 100.0) if policy == "exponential" else 0.0
    inc = _weight(ramp, "step", 10) if policy == "linear" else 0
    pause = ramp.duration("pause", 0.0, positive=False)
    min_requests = ramp.integer("min_requests", 0, 0, 10**9)
    ramp.done()
    if start is None or top is None or inc is None:
        return []
    if not 0 < start < top:
        node.error(
            ramp.sub("start"),
            f"must be above 0 and below max ({top / 100:g})",
            ramp.data.get("start", 1),
        )
        return []
    weights = _expand(start, top, factor, inc)
    if len(weights) > _MAX_STEPS:
        node.error(ramp.path, f"expands into {len(weights)} steps; at most {_MAX_STEPS}")
        return []
    return [StepSpec(bp, pause, min_requests) for bp in weights]


def _expand(start: int, top: int, factor: float, inc: int) -> list[int]:
    """Basis-point weights from start, growing by factor or inc, ending at top."""
    out: list[int] = []
    weight = float(start)
    while round(weight) < top and len(out) <= _MAX_STEPS:
        if not out or round(weight) > out[-1]:
            out.append(round(weight))
        weight = weight * factor if factor else weight + max(inc, 1)
    return [*out, top]


def _read_schedule(node: Node) -> list[StepSpec]:
    """Steps, written out or expanded from a ramp; at least one below 100 %."""
    has_steps, has_ramp = node.has("steps"), node.has("ramp")
    if has_steps == has_ramp:
        node.error(node.path, "needs either steps or ramp (exactly one)")
    steps = _read_steps(node) if has_steps else _read_ramp(node) if has_ramp else []
    node.raw("steps")  # both seen: the error above already names them
    node.raw("ramp")
    if has_steps and steps and steps[0].weight_bp == 0:
        node.error(node.sub("steps[0].weight"), "must be above 0 (a step sends users)", 0)
    elif steps and steps[0].weight_bp >= BASIS_POINTS:
        node.error(node.sub("steps"), "needs a step below 100 (100 % is the promotion)")
    return steps


def parse(node: Node, known: frozenset[str]) -> StrategySpec:
    """Read a `canary:` block; every problem goes to node.errors with its path."""
    stable = check_backend(node, "stable", known)
    candidate = check_backend(node, "candidate", known)
    if stable and stable == candidate:
        node.error(node.sub("candidate"), "must differ from stable", candidate)
    header = node.header("override_header", "x-canary") or "x-canary"
    steps = _read_schedule(node)
    analysis = parse_analysis(node.mapping("analysis"))
    compare = parse_compare(node.items("compare"), node.errors)
    first = _shadow_first(node.mapping("shadow_first")) if node.has("shadow_first") else None
    named = _check_compare_names(node, compare)
    rewrite = parse_rewrites(node.mapping("rewrite"), (candidate,), stable)
    node.done()
    spec = CanarySpec(stable, candidate, tuple(steps), analysis, header, compare, first, rewrite)
    return _with_gate_fields(spec, named)


def _check_compare_names(node: Node, compare: tuple[FieldSpec, ...]) -> frozenset[str]:
    """A gate's `compare: NAME` must name an entry of the compare list; the names
    gates give that way (never compared as a label of their own)."""
    keys = {f.key for f in compare}
    named: set[str] = set()
    blocks = [("analysis.agreement", node.data.get("analysis"), "agreement")]
    blocks.append(("shadow_first", node.data, "shadow_first"))
    for where, parent, key in blocks:
        block = parent.get(key) if isinstance(parent, dict) else None
        name = block.get("compare") if isinstance(block, dict) else None
        if isinstance(name, str):
            named.add(name)
        if isinstance(name, str) and name not in keys:
            known = ", ".join(sorted(keys)) or "none"
            node.error(
                node.sub(f"{where}.compare"), f"names no compare entry (known: {known})", name
            )
    return frozenset(named)


def _shadow_first(node: Node) -> ShadowFirstSpec:
    bp = _weight(node, "percent", 100)
    if bp == 0:
        node.error(
            node.sub("percent"), "must be above 0 (shadow first judges mirrored requests)", 0
        )
    gate = AgreementGate(
        field=agreement_field(node),
        min=node.number("min_agreement", 0.95, 0.0, 1.0),
        min_requests=node.integer("min_requests", 500, 1, 10**9),
        mirror_bp=bp or BASIS_POINTS,
        alpha=node.number("alpha", 0.01, 1e-9, 0.5),
    )
    node.done()
    return ShadowFirstSpec(bp or BASIS_POINTS, gate)


def _with_gate_fields(spec: CanarySpec, named: frozenset[str] = frozenset()) -> CanarySpec:
    """Add a label comparison for every gate field that `compare` does not list."""
    listed = {f.key for f in spec.compare} | named
    extra: list[FieldSpec] = []
    for text in spec.agreement_fields:
        if text not in listed and text not in (WHOLE_ANSWER, ""):
            extra.append(FieldSpec(text, "label"))
    return replace(spec, compare=spec.compare + tuple(extra)) if extra else spec


def build(spec: StrategySpec) -> Canary:
    if not isinstance(spec, CanarySpec):
        raise TypeError(f"canary cannot build from {type(spec).__name__}")
    return Canary(spec)


CANARY = StrategyKind("canary", parse, build)
