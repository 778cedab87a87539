"""`bluegreen`: every request on the active colour; one write switches them all.

    bluegreen:
      blue: fraud-blue
      green: fraud-green
      active: blue                          # the colour of the very first rollout only
      preview_header: X-Preview             # "X-Preview: 1" reaches the idle colour
      smoke: [{method: POST, path: /predict, body: '{"features":[1,2]}', expect_status: 200}]
      watch: {window: 1m, baseline: 5m, error_rate: {}, latency: {p99_ratio: 1.5}}

Theory of operation. The spec names the two backends; which colour is active
is status, kept in the state store (`Rollout.kind == "bluegreen"`,
`Rollout.active` "blue" or "green") and written by router/control/bluegreen.py.
`decide` is a lookup: the active colour's backend (reason "active"), or the
idle one for a request carrying the preview header (reason "preview"), so
testers can exercise the idle colour before it takes traffic. Every Decision is
made once, at build time.

Colour, not backend, is the status: an operator who deploys a new model to
the idle colour edits that colour's backend in config.yaml, and the stored
colour keeps pointing at the right side. `active:` in config.yaml is read only
while the store has nothing for the route (first start, in-memory store);
after that `routerctl switch` and `routerctl rollback` move traffic.

`smoke` lists requests the controller sends straight to the idle colour's
backend before a switch; `watch` is the window after a switch during which
gates (router/core/gates.py) compare the new colour with the old one's figures
from before the switch (`baseline`, default the window's length).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from router.core.analysis import AnalysisSpec, parse_analysis
from router.core.confkit import Node
from strategies.base import EVERY_COPY, Decision, StrategyKind, StrategySpec, check_backend

if TYPE_CHECKING:
    from router.core.rollout import Rollout

COLOURS = ("blue", "green")
_PREVIEW_ON = frozenset({b"1", b"true", b"yes", b"on"})
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_MAX_WATCH = 3600.0  # the metric windows the baseline is read from live an hour


def other(colour: str) -> str:
    """The colour that is not `colour`."""
    return "green" if colour == "blue" else "blue"


@dataclass(frozen=True, slots=True)
class SmokeRequest:
    """One request sent to the idle colour before a switch; it must answer expect_status."""

    method: str = "GET"
    path: str = "/"
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    expect_status: int = 200


@dataclass(frozen=True, slots=True)
class WatchSpec:
    """Gates judging the new colour for `window` seconds after a switch (0: no watch)."""

    window: float = 60.0
    baseline: float = 60.0  # seconds of the old colour's figures before the switch
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)


@dataclass(frozen=True, slots=True)
class BlueGreenSpec:
    blue: str
    green: str
    active: str = "blue"  # initial colour
    preview_header: str = "x-preview"  # lower case
    smoke: tuple[SmokeRequest, ...] = ()
    watch: WatchSpec = field(default_factory=WatchSpec)

    def backends(self) -> tuple[str, ...]:
        return (self.blue, self.green)

    def backend(self, colour: str) -> str:
        return self.green if colour == "green" else self.blue


class BlueGreen:
    """The built strategy: two colours, four possible decisions."""

    __slots__ = ("_active", "_backends", "_header", "_preview", "copies", "spec")

    def __init__(self, spec: BlueGreenSpec) -> None:
        self.copies = EVERY_COPY
        self.spec = spec
        self._backends = spec.backends()
        self._header = spec.preview_header.encode()
        self._active = {c: Decision(spec.backend(c), "active") for c in COLOURS}
        self._preview = {c: Decision(spec.backend(other(c)), "preview") for c in COLOURS}

    @property
    def override_header(self) -> bytes | None:
        return self._header

    def backends(self) -> tuple[str, ...]:
        return self._backends

    def active(self, live: Rollout | None) -> str:
        """The active colour: the store's when it holds a blue/green rollout, else config's."""
        if live is not None and live.kind == "bluegreen" and live.active in COLOURS:
            return live.active
        return self.spec.active

    def decide(self, key: int, live: Rollout | None, override: bytes | None) -> Decision:
        colour = self.active(live)
        if override is not None and override.strip().lower() in _PREVIEW_ON:
            return self._preview[colour]
        return self._active[colour]

    def weights(self, live: Rollout | None) -> dict[str, float]:
        """Percent of (non-preview) requests per backend, for status display."""
        active = self.spec.backend(self.active(live))
        return {b: 100.0 if b == active else 0.0 for b in self._backends}


# -- parsing -------------------------------------------------------------------
def _smoke_one(node: Node) -> SmokeRequest:
    method = node.choice("method", "GET", _METHODS)
    path = node.string("path", "/")
    if not path.startswith("/"):
        node.error(node.sub("path"), "must be a path starting with /", path)
    body = node.raw("body")
    if body is not None and not isinstance(body, str):
        node.error(node.sub("body"), "must be a string (write JSON as a quoted string)", body)
    headers = node.mapping("headers")
    pairs = tuple((str(k), str(v)) for k, v in headers.data.items())
    headers.seen.update(str(k) for k in headers.data)
    status = node.integer("expect_status", 200, 100, 599)
    node.done()
    return SmokeRequest(method, path, body if isinstance(body, str) else "", pairs, status)


def _smoke(node: Node) -> tuple[SmokeRequest, ...]:
    return tuple(_smoke_one(Node(item, path, node.errors)) for path, item in node.items("smoke"))


def _watch(node: Node) -> WatchSpec:
    if not node.ok:
        return WatchSpec()
    window = node.duration("window", 60.0, positive=False)
    baseline = node.duration("baseline", window or 60.0)
    for key, value in (("window", window), ("baseline", baseline)):
        if value > _MAX_WATCH:
            node.error(node.sub(key), "must be at most 1h (metric windows expire)", value)
    # the rest of the block is an `analysis` block: hand it over without our keys
    gates = {k: v for k, v in node.data.items() if k not in ("window", "baseline")}
    analysis = parse_analysis(Node(gates, node.path, node.errors))
    return WatchSpec(min(window, _MAX_WATCH), min(baseline, _MAX_WATCH), analysis)


def parse(node: Node, known: frozenset[str]) -> StrategySpec:
    """Read a `bluegreen:` block; every problem goes to node.errors with its path."""
    blue = check_backend(node, "blue", known)
    green = check_backend(node, "green", known)
    if blue and blue == green:
        node.error(node.sub("green"), "must differ from blue", green)
    active = node.choice("active", "blue", COLOURS)
    header = node.header("preview_header", "x-preview") or "x-preview"
    smoke = _smoke(node)
    watch = _watch(node.mapping("watch"))
    node.done()
    return BlueGreenSpec(blue, green, active, header, smoke, watch)


def build(spec: StrategySpec) -> BlueGreen:
    if not isinstance(spec, BlueGreenSpec):
        raise TypeError(f"bluegreen cannot build from {type(spec).__name__}")
    return BlueGreen(spec)


BLUEGREEN = StrategyKind("bluegreen", parse, build)
