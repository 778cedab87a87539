"""The `analysis` block: which gates judge a rollout, and every gate's verdict on a window.

The gate set is open: GATES maps a config word to a parser returning a `Gate`
(router/core/gates.py holds the protocol and the four base gates; accuracy and
time to first token build on them in gates_accuracy.py and gates_ttft.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from router.core.confkit import Node
from router.core.gates import (
    ErrorRateGate,
    Gate,
    GateFactory,
    GateResult,
    Sample,
    parse_agreement,
    parse_error_rate,
    parse_latency,
    parse_prediction_drift,
)
from router.core.gates_accuracy import parse_accuracy
from router.core.gates_ttft import parse_ttft

GATES: dict[str, GateFactory] = {
    "error_rate": parse_error_rate,
    "latency": parse_latency,
    "ttft": parse_ttft,  # time to first token of streamed answers (router/core/gates_ttft.py)
    "prediction_drift": parse_prediction_drift,
    "agreement": parse_agreement,
    "accuracy": parse_accuracy,  # delayed labels: router/core/gates_accuracy.py
}


@dataclass(frozen=True, slots=True)
class AnalysisSpec:
    """How often the controller judges, and with which gates."""

    interval: float = 2.0
    gates: tuple[Gate, ...] = (ErrorRateGate(),)


def parse_analysis(node: Node) -> AnalysisSpec:
    """Read the `analysis` block; with no gate listed a rollout still has error_rate.

    To watch a gate without letting it act, give it `dry_run: true`."""
    if not node.ok:
        return AnalysisSpec()
    interval = node.duration("interval", 2.0)
    gates: list[Gate] = []
    for word in list(node.keys()):
        if word == "interval":
            continue
        factory = GATES.get(word)
        if factory is None:
            node.raw(word)
            node.error(node.sub(word), f"unknown gate; known: {', '.join(sorted(GATES))}")
            continue
        gates.append(factory(node.mapping(word)))
    node.done()
    if not gates:  # listing no gate must not mean "judge nothing": keep the default
        gates.append(ErrorRateGate())
    return AnalysisSpec(interval=interval, gates=tuple(gates))


def evaluate(
    spec: AnalysisSpec, candidate: Sample, baseline: Sample, extra: Mapping[str, object]
) -> list[GateResult]:
    """Every gate's verdict on one window."""
    return [gate.judge(candidate, baseline, extra) for gate in spec.gates]
