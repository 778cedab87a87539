"""What every rollout state machine shares: phases, the moves between them, windows.

Theory of operation. Each controlled strategy kind is a pure state machine in a
module of its own (router/control/canary_machine.py, bluegreen_machine.py,
automation_machine.py): (rollout, what was seen or asked, now) -> (rollout,
events), no I/O and no clock. What they have in common is data, held by one
`Table` per kind, the way h11 keeps a connection's states in tables rather
than in branches:

- `phases`, an enum: the words a rollout's `phase` may hold (plain strings in
  the store, so nothing stored changes shape);
- `moves`: for each trigger (an automatic one such as "failed", or an
  operator's verb), the phases it may move a rollout out of and, for each, the
  phases it may move it into. Every change of phase goes through `Table.move`,
  which refuses a move the table does not list (`IllegalMove`: a bug in the
  machine, loud in the tests, never silently a strange state);
- `verbs`: the triggers an operator may send; `check` refuses one the phase does
  not allow with a sentence for the operator (`InvalidCommand`);
- `windowed`: the phases judged on a window of their own; the window id is the
  rollout's revision and the start of the judged period, so each period (a
  step, a switch, a level, a retry) is judged on its own data from every
  replica. `uncounted`: windowed phases whose requests the metrics do not file
  under the window (a canary's shadow first: no user reaches the candidate; its
  comparisons are still judged there).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from router.core.gates import GateResult
from router.core.rollout import Rollout

P = TypeVar("P", bound=StrEnum)
Moves = Mapping[str, Mapping[P, frozenset[P]]]


class InvalidCommand(Exception):
    """A command that the rollout's phase does not allow; the message says why."""


class IllegalMove(Exception):
    """A machine tried a move its own table does not list: a bug, never an input."""


@dataclass(frozen=True, slots=True)
class Table(Generic[P]):
    """One kind's phases and the moves between them (see the module doc)."""

    kind: str
    phases: type[P]
    moves: Moves[P]
    verbs: tuple[str, ...] = ()
    refusals: Mapping[P, str] = field(default_factory=dict)
    windowed: frozenset[P] = frozenset()
    uncounted: frozenset[P] = frozenset()

    def move(self, r: Rollout, trigger: str, to: P, **changes: Any) -> Rollout:
        """`r` in phase `to` (with `changes`), if `trigger` may take it there."""
        self.require(r, trigger, to)
        return r.evolve(phase=to.value, **changes)

    def require(self, r: Rollout, trigger: str, to: P) -> None:
        """Raise IllegalMove unless the table lets `trigger` move `r` to `to`."""
        now = self.phase_of(r)
        if now is None or to not in self.moves.get(trigger, {}).get(now, frozenset()):
            was = r.phase or "no phase"
            raise IllegalMove(f"{self.kind} {r.route}: {trigger} cannot move {was} to {to}")

    def check(self, r: Rollout, verb: str) -> None:
        """Raise InvalidCommand unless an operator may send `verb` in `r`'s phase."""
        if verb not in self.verbs:
            raise InvalidCommand(f"unknown command {verb!r}; known: {', '.join(self.verbs)}")
        now = self.phase_of(r)
        if now is None or now not in self.moves[verb]:
            why = self.refusals.get(now, r.phase) if now is not None else r.phase
            raise InvalidCommand(f"cannot {verb} {r.route}: {why}")

    def phase_of(self, r: Rollout) -> P | None:
        """`r`'s phase as this kind's enum; None for a word of another kind."""
        try:
            return self.phases(r.phase)
        except ValueError:
            return None

    def window(self, r: Rollout) -> str | None:
        """The id of `r`'s judged period, or None when its phase judges nothing."""
        if r.phase not in self.windowed:
            return None
        return f"{r.revision}-{int(r.step_started_at * 1000)}"

    def counted_window(self, r: Rollout) -> str | None:
        """The window the metrics file `r`'s requests under, if any."""
        return None if r.phase in self.uncounted else self.window(r)


def gate_dicts(gates: tuple[GateResult, ...]) -> list[dict[str, Any]]:
    """Gate verdicts with their figures, for history and `routerctl status`."""
    return [asdict(g) for g in gates]
