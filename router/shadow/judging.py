"""What a route's config says about judging its mirrored copies.

The compare settings (a shadow route's own, a canary's or an automation
route's `compare` list; whole-JSON comparison for other strategies), the
model protocol that turns answers into items, their compare id (counters are
kept per id), and the rollout window a copy counts in.

Canary routes. A canary mirrors stable-served requests to its candidate when an
`agreement` gate or `shadow_first` asks for it (strategies/canary.py). Their
answers are compared with the canary's `compare` settings (`settings_of`) and,
besides `cmp:<backend>`, counted under the rollout window that is live when the
copy is judged: `cmp:<backend>:<window>` (mirror_figures.window_counter, the
window of router/control/base.py `window_id`). Each step and the shadow-first phase is
thus judged on its own comparisons from every replica, and a retry starts from
zero. A copy sent in one window and judged just after the next one opened counts
in the new one: a handful at most, far below any gate's minimum sample.
"""

from __future__ import annotations

from typing import Final

from router.control.base import window_id
from router.core import protocols
from router.core.protocols import ModelProtocol
from router.runtime import Runtime
from router.shadow.figures import compare_id
from strategies.shadow import ShadowSpec

_DEFAULT_SETTINGS: Final = ShadowSpec(primary="", shadows=())


def settings_of(runtime: Runtime, route: str) -> ShadowSpec:
    """The route's compare settings: a shadow's own, a canary's or an automation
    route's `compare` list; defaults (whole-JSON compare) for other strategies."""
    compiled = runtime.table.by_name.get(route)
    strategy = compiled.strategy if compiled is not None else None
    own = getattr(strategy, "compare_settings", None)
    if isinstance(own, ShadowSpec):
        return own
    spec = getattr(strategy, "spec", None)
    return spec if isinstance(spec, ShadowSpec) else _DEFAULT_SETTINGS


def protocol_of(runtime: Runtime, route: str) -> ModelProtocol:
    """The route's model protocol (router/core/protocols/): how answers become items."""
    compiled = runtime.table.by_name.get(route)
    return protocols.get(compiled.spec.protocol if compiled is not None else protocols.DEFAULT)


def judging(runtime: Runtime, route: str) -> tuple[ShadowSpec, ModelProtocol, str]:
    """What a comparison of the route needs: settings, protocol, and their compare id."""
    settings, protocol = settings_of(runtime, route), protocol_of(runtime, route)
    return settings, protocol, compare_id(protocol.word, settings.compare)


def window_of(runtime: Runtime, route: str) -> str | None:
    """The live rollout window of a canary route (shadow first too), or the level's
    of an automation route (router/control/base.py `window_id`); None for every
    other strategy."""
    compiled = runtime.table.by_name.get(route)
    if compiled is None or compiled.spec.strategy_kind not in ("canary", "automation"):
        return None
    return window_id(runtime.live.get(route))
