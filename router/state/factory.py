"""Pick the state store a config asks for: no url -> memory, redis URLs -> Redis."""

from __future__ import annotations

from router.state.base import StateStore
from router.state.memory import MemoryStore
from router.state.redis import RedisStore

REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://")


def open_store(url: str | None) -> StateStore:
    """A store for `url` (not connected yet: call `start()`). Raises ValueError
    for a scheme we do not know, so a typo in state.url is refused at load."""
    if not url or url == "memory://":
        return MemoryStore()
    if url.startswith(REDIS_SCHEMES):
        return RedisStore(url)
    raise ValueError(f"state.url must start with one of {', '.join(REDIS_SCHEMES)}, got {url!r}")
