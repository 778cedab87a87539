"""The canary's `accuracy` gate: the candidate's accuracy from delayed labels vs stable's.

    analysis:
      accuracy: {max_drop: 0.05, min_labels: 200, alpha: 0.01}

Labels posted to `/v1/feedback` are matched to the answers of the current
step (router/drift/labels.py counts them per rollout window, `fbw:<window>`): the
stable backend's answers, and the candidate's, served or mirrored (a request
the stable answered and the agreement gate mirrored is a candidate prediction
on a real request too). The gate reads `extra["accuracy"]` = {"candidate":
(correct, n), "stable": (correct, n)} and judges like the error-rate gate, with
the same always-valid confidence sequences (router/core/gates.py `rate_bounds`),
each arm at alpha/2:

    fail  when upper(candidate) - lower(stable) < -max_drop   (worse for sure)
    pass  when lower(candidate) - upper(stable) >= -max_drop  (and min_labels each)
    wait  otherwise

Failing needs no minimum: the bounds carry the uncertainty. The route needs a
`drift:` block with `outputs` (the first output is the prediction), as every
use of delayed labels does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from router.core.confkit import Node
from router.core.gates import GateResult, Sample, Verdict
from router.core.stats import rate_bounds


def _arm(extra: Mapping[str, object], name: str) -> tuple[int, int]:
    table = extra.get("accuracy")
    found = table.get(name) if isinstance(table, Mapping) else None
    if isinstance(found, tuple | list) and len(found) == 2:
        return int(found[0]), int(found[1])
    return 0, 0


def _pct(x: float) -> str:
    return f"{x * 100:.3g} %"


@dataclass(frozen=True, slots=True)
class AccuracyGate:
    max_drop: float = 0.05  # tolerated candidate accuracy below stable's
    min_labels: int = 200  # labels per arm before the gate may pass
    alpha: float = 0.01
    dry_run: bool = False
    name: str = "accuracy"

    def judge(self, candidate: Sample, baseline: Sample, extra: Mapping[str, object]) -> GateResult:
        ck, cn = _arm(extra, "candidate")
        sk, sn = _arm(extra, "stable")
        c_lo, c_hi = rate_bounds(ck, cn, self.alpha / 2)
        s_lo, s_hi = rate_bounds(sk, sn, self.alpha / 2)
        c_acc, s_acc = (ck / cn if cn else 0.0), (sk / sn if sn else 0.0)
        figures = (
            f"candidate accuracy {_pct(c_acc)} ({ck}/{cn} labels) vs stable {_pct(s_acc)} "
            f"({sk}/{sn})"
        )
        verdict, why = self._verdict(c_lo - s_hi, c_hi - s_lo, min(cn, sn))
        return GateResult(
            self.name,
            verdict,
            c_acc - s_acc,
            -self.max_drop,
            cn,
            sn,
            self.dry_run,
            f"{figures}: {why}",
        )

    def _verdict(self, low: float, high: float, n: int) -> tuple[Verdict, str]:
        conf = f"{(1 - self.alpha) * 100:g} %"
        if n and high < -self.max_drop:
            return (
                "fail",
                f"worse by more than {_pct(-high)} at {conf} confidence "
                f"(max drop {_pct(self.max_drop)})",
            )
        if n < self.min_labels:
            return "wait", f"waiting for {self.min_labels} labels per arm, have {n}"
        if low >= -self.max_drop:
            return "pass", f"at most {_pct(max(0.0, -low))} worse at {conf} confidence"
        return "wait", f"could still be {_pct(-low)} worse; need more labels"


def parse_accuracy(node: Node) -> AccuracyGate:
    gate = AccuracyGate(
        max_drop=node.number("max_drop", 0.05, 0.0, 1.0),
        min_labels=node.integer("min_labels", 200, 1, 10**9),
        alpha=node.number("alpha", 0.01, 1e-9, 0.5),
        dry_run=node.boolean("dry_run", False),
    )
    node.done()
    return gate
