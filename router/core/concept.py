"""Concept drift: an arm's accuracy from delayed labels, watched by a sequential test; pure.

Theory of operation. Per arm (router/drift/labels.py: a backend, or a model's
mirrored or held answers) the first REFERENCE labels after a start or a
reset are the *reference window*; its accuracy p0 is taken at the lower end
of its 99 % Wilson interval, so a reference that happened to look good does
not make ordinary labels look like a drop. Every later label feeds a CUSUM
(Page's test) of the log likelihood ratio of "accuracy p1 = p0 - DROP"
against "accuracy p0":

    S <- max(0, S + log(p1/p0))              a correct label
    S <- max(0, S + log((1-p1)/(1-p0)))      a wrong one

and the arm alarms when S reaches h = log(RUN_LENGTH). The stated
false-alarm rate: while the accuracy holds at its reference, the average run
between false alarms is at least RUN_LENGTH labels (Lorden's bound for the
CUSUM, e^h; the true accuracy being at or above the p0 used, which the lower
interval end makes hold with probability 99.5 %). A drop of DROP or more is
caught in roughly h / KL labels: 0.9 -> 0.6 after 36 to 233 labels over 200
simulated runs (tests/test_concept.py), while 0.5 to 0.99 held steady raised
no alarm in 80 runs of 10,000 labels.

Labels arrive in batches (what the replicas counted since the last look, per
minute slot); a batch is one step of the sum, which can only delay an alarm,
never add a false one. The alarm clears when S is back at 0 (the accuracy came
back), and S is capped at twice h so that clearing does not take forever.
A state is a plain dict, stored between looks (router/drift/concept_watch.py), so a new
leader goes on where the last one stopped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Final

from router.core.stats import wilson

REFERENCE: Final = 500  # labels in the reference window
DROP: Final = 0.1  # the accuracy drop the test is tuned for
RUN_LENGTH: Final = 100_000  # labels between false alarms, at least, on average
Z_REFERENCE: Final = 2.576  # the reference accuracy at the lower end of its 99 % interval
THRESHOLD: Final = math.log(RUN_LENGTH)
_EDGE: Final = 1e-3  # keeps the log ratios finite at 0 % and 100 %


@dataclass(slots=True)
class ArmWatch:
    """One arm's reference and running statistic."""

    ref_n: int = 0
    ref_ok: int = 0
    s: float = 0.0
    alarm: bool = False
    n: int = 0  # labels judged since the reference was complete
    ok: int = 0

    @property
    def p0(self) -> float | None:
        """The reference accuracy the test holds the arm to, once known."""
        if self.ref_n < REFERENCE:
            return None
        low, _ = wilson(self.ref_ok, self.ref_n, Z_REFERENCE)
        return min(max(low, 2 * _EDGE), 1 - _EDGE)

    def feed(self, n: int, ok: int) -> str | None:
        """Add a batch of n labels, ok of them right: "alarm", "cleared" or None."""
        take = min(n, REFERENCE - self.ref_n) if self.ref_n < REFERENCE else 0
        if take:
            part = round(ok * take / n)
            self.ref_n, self.ref_ok = self.ref_n + take, self.ref_ok + part
            n, ok = n - take, ok - part
        p0 = self.p0
        if p0 is None or n <= 0:
            return None
        p1 = max(p0 - DROP, _EDGE)
        step = ok * math.log(p1 / p0) + (n - ok) * math.log((1 - p1) / (1 - p0))
        self.s = min(max(0.0, self.s + step), 2 * THRESHOLD)
        self.n, self.ok = self.n + n, self.ok + ok
        if not self.alarm and self.s >= THRESHOLD:
            self.alarm = True
            return "alarm"
        if self.alarm and self.s == 0.0:
            self.alarm = False
            return "cleared"
        return None

    def figures(self) -> dict[str, Any]:
        """For status and history: the reference, the statistic and its threshold."""
        return {
            "reference": self.ref_ok / self.ref_n if self.ref_n else None,
            "reference_n": self.ref_n,
            "p0": self.p0,
            "since": self.ok / self.n if self.n else None,
            "since_n": self.n,
            "cusum": round(self.s, 3),
            "threshold": round(THRESHOLD, 3),
            "alarm": self.alarm,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArmWatch:
        known = {k: data[k] for k in ("ref_n", "ref_ok", "s", "alarm", "n", "ok") if k in data}
        return cls(**known)
