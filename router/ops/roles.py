"""Which part each backend plays in its route: the `role` label of /metrics.

A dashboard compares the candidate with the stable backend, not `iris-v2` with
`iris-v1`: every per-backend family carries `role`, read from the route's
strategy block in config.yaml (the spec, so a role does not change while a
rollout moves; after a promotion the candidate is still `candidate` until the
config names it stable):

    canary      stable, candidate
    bluegreen   blue, green (the active one is in router_rollout_info)
    shadow      primary, shadow, secondary (the primary's second copy, the noise floor)
    automation  model, human
    split       split

A backend the route no longer names (a reload removed it) reads `none`. The
map is rebuilt once per routing table, when /metrics is rendered: the request
path never looks at it.
"""

from __future__ import annotations

from typing import Any

from router.core.rollout import Rollout
from router.dataplane.routing import CompiledRoute, RouteTable
from router.runtime import Runtime

NONE = "none"
_SAMPLE_KEYS = range(5, 10_000, 10)  # one key per 10 basis points, for decide() sampling


def route_roles(route: CompiledRoute) -> dict[str, str]:
    """backend -> role in one route (see the module doc)."""
    kind, spec = route.spec.strategy_kind, getattr(route.strategy, "spec", None)
    if spec is None:
        return dict.fromkeys(route.strategy.backends(), kind)
    pairs = _PAIRS.get(kind)
    if pairs is None:
        return dict.fromkeys(route.strategy.backends(), kind)
    out: dict[str, str] = {}
    for attr, role in pairs:
        value: Any = getattr(spec, attr, None)
        names = value if isinstance(value, tuple) else (value,)
        for name in names:
            if isinstance(name, str) and name:
                out.setdefault(name, role)
    for name in route.strategy.backends():
        out.setdefault(name, kind)
    return out


_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "canary": (("stable", "stable"), ("candidate", "candidate")),
    "bluegreen": (("blue", "blue"), ("green", "green")),
    "shadow": (("primary", "primary"), ("shadows", "shadow"), ("secondary", "secondary")),
    "automation": (("model", "model"), ("human", "human")),
}


class Roles:
    """`role(route, backend)` for the runtime's current table, cached per table."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._table: RouteTable | None = None
        self._roles: dict[str, dict[str, str]] = {}

    def role(self, route: str, backend: str) -> str:
        table = self.runtime.table
        if table is not self._table:
            self._roles = {name: route_roles(r) for name, r in table.by_name.items()}
            self._table = table
        return self._roles.get(route, {}).get(backend, NONE)


def route_weights(route: CompiledRoute, live: Rollout | None) -> dict[str, float]:
    """Share of requests (percent) each backend answers now.

    Strategies that know their split expose `weights(live)`; for any other the
    split is measured by asking `decide` for keys spread evenly over the 10 000
    buckets (pure and cheap: 1 000 calls), which is exact to 0.1 %.
    """
    weights = getattr(route.strategy, "weights", None)
    if callable(weights):
        return {str(k): float(v) for k, v in weights(live).items()}
    counts = dict.fromkeys(route.strategy.backends(), 0)
    for key in _SAMPLE_KEYS:
        primary = route.strategy.decide(key, live, None).primary
        counts[primary] = counts.get(primary, 0) + 1
    return {name: round(100 * n / len(_SAMPLE_KEYS), 1) for name, n in counts.items()}
