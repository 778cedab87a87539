"""The StateStore protocol: everything replicas share.

Two implementations pass one contract-test suite (tests/test_state_contract.py):
`MemoryStore` (one process, nothing to install) and `RedisStore` (shared,
durable, many replicas). Nothing on the request path awaits a store: the data
plane reads a snapshot (router/state/live.py) and metrics are flushed about once
a second in one call.

Redis key layout (every key carries the route as a hash tag so Redis Cluster
keeps a route's keys on one slot; no KEYS/SCAN at run time):

    dr:{route}:rollout        the Rollout JSON (string), CAS on its version
    dr:{route}:history        capped stream of history entries
    dr:{route}:c:<name>       counter hash (HINCRBY), with a TTL
    dr:{route}:s:<kind>       capped list of JSON samples, with a TTL
    dr:{lease}:lease          SET NX PX leader lease
    dr:changes                pub/sub channel; message = route name
    dr:epoch                  a random id written once into an empty store (SET NX):
                              a new epoch means the store lost everything

Every method raises `StoreUnavailable` when the backing service cannot be
reached; callers keep serving on what they last knew.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from router.core.rollout import Rollout

CHANGES_CHANNEL = "dr:changes"
# Yielded by `subscribe()` once the subscription is live (first item, and again
# after any message may have been lost): "re-read everything you follow".
RESYNC = "*"


class StoreUnavailable(Exception):
    """The state store cannot be reached now; retry later."""


@dataclass(frozen=True, slots=True)
class StoreIdentity:
    """Who the store is now: tells a restart that lost the data from a network blip.

    `epoch` is written once into an empty store and lives as long as its data: a
    different epoch than before means the data was lost (an empty restart, a
    flush, a failover to an empty replica). `run_id` changes on every restart of
    the server process, with or without its data (Redis `INFO server`)."""

    epoch: str
    run_id: str


class StateStore(Protocol):
    # True when other processes may share the state (Redis); a memory store has no
    # other replica to ask and cannot lose its data while the process runs.
    shared: bool

    async def start(self) -> None:
        """Connect (or prepare); must not raise if the service is down."""

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the store answers now."""
        ...

    async def get_rollout(self, route: str) -> Rollout | None: ...

    async def get_rollouts(self, routes: Sequence[str]) -> dict[str, Rollout]:
        """The stored rollouts of these routes (missing ones left out)."""
        ...

    async def cas_rollout(self, new: Rollout, expected_version: int) -> Rollout | None:
        """Store `new` with version expected_version + 1 if the stored version is
        `expected_version` (0: nothing stored yet); publish the route's name on
        the changes channel. Returns the stored value, or None on a conflict."""
        ...

    async def restore_rollout(self, held: Rollout, expected_version: int) -> bool:
        """Write back `held` as it is, its own version included, if the stored version
        is still `expected_version` (0: nothing stored) and lower than held's; publish
        the route's name. For a replica whose snapshot is newer than a store that
        lost data: the highest version among replicas wins, and two replicas holding
        the same value never overwrite each other (router/state/live.py)."""
        ...

    async def announce(self, route: str) -> None:
        """Publish the route's name on the changes channel: every replica re-reads it
        (and writes back its copy if the store lost it)."""

    async def identity(self) -> StoreIdentity:
        """The store's epoch (written now if the store has none) and its run id."""
        ...

    async def add_history(self, route: str, entry: Mapping[str, Any], cap: int = 1000) -> None:
        """Append one entry (a flat JSON-able mapping) to the route's capped history."""

    async def history(self, route: str, count: int = 50) -> list[dict[str, Any]]:
        """The newest `count` entries, oldest first; each gains `id` and `ts`."""
        ...

    def subscribe(self) -> AsyncIterator[str]:
        """Route names as their rollouts change, from every replica. The first
        item is RESYNC, once the subscription is live; RESYNC comes again if
        messages may have been dropped. The iterator raises StoreUnavailable
        when the connection is lost (or ends when the store closes); subscribe
        again. Close it with `aclose()` when done."""
        ...

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take the lease, or renew it if `holder` already has it; False if
        another holder has it."""
        ...

    async def release_lease(self, name: str, holder: str) -> None: ...

    async def lease_holder(self, name: str) -> str | None: ...

    async def add_counters(
        self, route: str, counters: Mapping[str, Mapping[str, int]], ttl: float
    ) -> None:
        """HINCRBY every field of every named counter hash of the route, in one
        round trip; each hash expires `ttl` seconds after its last update."""

    async def add_counters_many(
        self, batch: Mapping[str, Mapping[str, Mapping[str, int]]], ttl: float
    ) -> None:
        """`add_counters` for several routes in one round trip (metrics flush)."""

    async def read_counters(self, route: str, names: Sequence[str]) -> dict[str, dict[str, int]]:
        """The named counter hashes of the route (a missing one is {})."""
        ...

    async def push_sample(self, route: str, kind: str, item: str, cap: int, ttl: float) -> None:
        """Prepend one JSON sample to the route's capped list of that kind."""

    async def samples(self, route: str, kind: str, count: int) -> list[str]:
        """The newest `count` samples, newest first."""
        ...

    async def clear_samples(self, route: str, kind: str) -> None: ...
