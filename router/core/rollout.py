"""The status of a route's deployment as kept in the state store.

`config.yaml` is the spec; a `Rollout` is the status: where the deployment is
now. It is one flat, frozen value so that it serialises to a JSON object and
back with no custom code, and so that every replica's snapshot is immutable.
New fields must have defaults (older stored values still load).

`version` is the compare-and-set counter: the store writes a new value only if
the stored version equals the one the writer read, and bumps it. `revision`
counts deployments of a route (a new candidate in config.yaml is a new one).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Final

# Shares are basis points: 10,000 = every request (0.01 % steps). A request goes to
# the backend whose range holds its sticky key % BASIS_POINTS (router/dataplane/hashing).
BASIS_POINTS: Final = 10_000


@dataclass(frozen=True, slots=True)
class Rollout:
    route: str
    version: int = 0  # CAS counter; 0 = never stored
    revision: int = 1  # deployment number; new candidate -> +1
    kind: str = ""  # strategy word: canary, bluegreen, automation, ...
    phase: str = ""  # strategy-specific: progressing, paused, aborted, promoted, ...
    step: int = 0  # index into the canary's steps
    weight_bp: int = 0  # candidate share in basis points (0..10000)
    stable: str = ""  # backend serving the baseline
    candidate: str = ""  # backend being rolled out
    previous_stable: str = ""  # for rollback after a promotion
    active: str = ""  # blue/green: active colour ("blue" or "green")
    level: str = ""  # automation ladder level
    step_started_at: float = 0.0  # when the current step (window) began, epoch s
    updated_at: float = 0.0
    reason: str = ""  # plain-words why the rollout is where it is
    updated_by: str = ""  # "controller", "routerctl", "config", ...
    extra: dict[str, Any] = field(default_factory=dict)  # strategy-specific scalars

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Rollout:
        data = json.loads(text)
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def evolve(self, **changes: Any) -> Rollout:
        return replace(self, **changes)
