"""The process's current world, shared by the data plane, admin API and tasks.

One mutable holder of immutable parts: a hot reload swaps `config` and `table`
(two reference assignments, done together on the event loop, so no request sees
half of a change); the state follower swaps `live`. Readers take the reference
once per request and use that.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from router.config.spec import Config
from router.core.rollout import Rollout
from router.dataplane.routing import RouteTable


class Recorder(Protocol):
    """Told once per finished request; must be cheap (no I/O, no await)."""

    def record(
        self,
        route: str,
        backend: str,
        status: int,
        seconds: float,
        reason: str,
        request_id: str,
        nbytes: int,
    ) -> None: ...


class NullRecorder:
    def record(
        self,
        route: str,
        backend: str,
        status: int,
        seconds: float,
        reason: str,
        request_id: str,
        nbytes: int,
    ) -> None:
        return None


def _no_notes() -> dict[str, Any]:
    return {}


@dataclass
class Runtime:
    config: Config
    table: RouteTable
    config_path: str = ""
    live: Mapping[str, Rollout] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)
    last_reload_error: str | None = None
    last_reload_error_at: float | None = None
    reload_refusals: int = (
        0  # config edits refused since start (router_config_reload_refusals_total)
    )
    store_ok: bool = True  # False while the state store is unreachable
    store_kind: str = "memory"
    # what the state follower knows beyond ok/unreachable: restores, a lost epoch
    store_notes: Callable[[], dict[str, Any]] = _no_notes
    started_at: float = field(default_factory=time.time)
    serving: bool = False  # the data listener is up (readiness waits for it)
    stopping: bool = False  # SIGTERM came: readiness answers 503 from now on

    def probe_readiness(self) -> tuple[int, dict[str, object]]:
        """The probes listener's /readyz: 503 while starting or stopping. A state store
        outage is reported but stays 200: every replica would go unready at once, while
        all of them can still route on their last snapshot (fail static)."""
        if self.stopping:
            return 503, {"status": "stopping"}
        if not self.serving:
            return 503, {"status": "starting"}
        if not self.store_ok:
            reasons = ["state store unreachable: serving last known state"]
            return 200, {"status": "degraded", "reasons": reasons}
        return 200, {"status": "ready"}

    def swap_config(self, config: Config, table: RouteTable) -> None:
        self.config = config
        self.table = table
        self.loaded_at = time.time()
        self.last_reload_error = None
        self.last_reload_error_at = None

    def reload_failed(self, message: str) -> None:
        self.last_reload_error = message
        self.last_reload_error_at = time.time()
        self.reload_refusals += 1
