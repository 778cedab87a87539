"""The strategy interface: how a route picks backends for one request.

A strategy is a plain object built once per config load from its spec. Its
`decide` is pure: no I/O, no await, no clock. It gets the request's 64-bit
sticky key (see router/dataplane/hashing.py), the route's live rollout state from the
state store's snapshot (None when the store has nothing for the route yet) and
the value of the strategy's override header when it declares one.

Each strategy module exposes one `StrategyKind`: the word under `strategy:` in
config.yaml, a parser for its own block and a builder. The registry in
strategies/registry.py maps the word to the kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from router.core.confkit import Node
    from router.core.rewrite import Rewrite
    from router.core.rollout import Rollout


@dataclass(frozen=True, slots=True)
class Decision:
    """What a strategy returns for one request."""

    primary: str  # backend name that answers the client
    reason: str  # short machine-readable word, e.g. "weight", "sticky", "override"
    mirrors: tuple[str, ...] = ()  # backends that get a copy; never awaited
    # True: buffer the primary's answer and pass it to the strategy's `after` hook
    # (see strategies/automation.py), which may send the request on to another backend
    follow_up: bool = False
    rewrite: Rewrite | None = None  # the primary's request is rewritten (router/core/rewrite.py)


@dataclass(frozen=True, slots=True)
class Copies:
    """What a strategy's mirrors are sent: the methods copied (None: every one) and the
    largest request body copied (a larger one is not mirrored, and counted)."""

    methods: frozenset[bytes] | None = None
    max_body: int = 1024 * 1024


EVERY_COPY = Copies()  # strategies that mirror without limits of their own


class Strategy(Protocol):
    """A route's decision function."""

    copies: Copies  # what its decisions' mirrors get (the data plane reads it per copy)

    @property
    def override_header(self) -> bytes | None:
        """Lower-case header name whose value is passed to `decide`, or None."""
        ...

    def backends(self) -> tuple[str, ...]:
        """Every backend this strategy may send to (primary or mirror)."""
        ...

    def decide(self, key: int, live: Rollout | None, override: bytes | None) -> Decision: ...


class StrategySpec(Protocol):
    """A strategy's validated config block (a frozen dataclass)."""

    def backends(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class StrategyKind:
    """One entry of the registry: config word -> parse and build."""

    name: str
    # parse(node, known_backends) -> spec; errors go to node.errors with paths
    parse: Callable[[Node, frozenset[str]], StrategySpec]
    build: Callable[[StrategySpec], Strategy]


def check_backend(node: Node, key: str, known: frozenset[str], *, required: bool = True) -> str:
    """Read a backend name under `key` and check it is defined in `backends:`."""
    name = node.string(key, required=required)
    if name and name not in known:
        node.error(node.sub(key), "is not a backend defined under backends", name)
    return name
