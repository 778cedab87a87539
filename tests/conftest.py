"""Fixtures shared by every test file.

Redis: one real redis-server per session (`redis_server`), emptied before each
test that asks for `redis_url`; a private, durable one per test for fault
tests that stop and restart it (`fresh_redis`). Both skip the test with a clear
message when redis-server is not installed.

State stores: `store` runs a test once on MemoryStore and once on RedisStore;
`peer` is a second replica's handle on the same shared state (for memory, one
process has one store, so it is the same object).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from router import native
from router.state.base import StateStore
from router.state.memory import MemoryStore
from router.state.redis import RedisStore
from tests.support.redis_server import RedisServer, redis_server_path


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test old code: a compiled module older than its source would run instead."""
    if stale := native.stale():
        pytest.exit(
            f"compiled {', '.join(stale)} older than the source: run `make native` "
            "(or `make interpreted` to test the .py files)",
            returncode=2,
        )


NO_REDIS = "redis-server is not on PATH (install it, or run `make redis`); Redis tests skipped"


def _need_redis() -> None:
    if redis_server_path() is None:
        pytest.skip(NO_REDIS)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole session; tests share it, flushed between."""
    _need_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server's url, emptied for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private, durable redis-server this test may stop and restart."""
    _need_redis()
    server = RedisServer(tmp_path / "redis", durable=True)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def cache_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server run as a cache (no snapshot, no append-only file): killed
    and started again, it comes back empty."""
    _need_redis()
    server = RedisServer(tmp_path / "redis", durable=False)
    server.start()
    yield server
    server.kill()


@pytest.fixture(params=["memory", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
async def store(store_kind: str, request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    """A started store of each kind; closed after the test."""
    made: StateStore = (
        MemoryStore()
        if store_kind == "memory"
        else RedisStore(request.getfixturevalue("redis_url"))
    )
    await made.start()
    yield made
    await made.close()


@pytest.fixture
async def peer(store: StateStore) -> AsyncIterator[StateStore]:
    """Another replica's store on the same shared state."""
    if isinstance(store, MemoryStore):
        yield store
        return
    other = RedisStore(store.url) if isinstance(store, RedisStore) else store
    await other.start()
    yield other
    await other.close()
