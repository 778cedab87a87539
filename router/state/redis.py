"""`RedisStore`: the shared, durable state store of a fleet of replicas.

Theory of operation (key layout in base.py):

- Every change that others must see is one atomic server-side step. The
  rollout compare-and-set is a Lua script (GET, decode the version, compare,
  SET, PUBLISH the route name): one round trip, and no replica can slip a write
  between the check and the set. Leases are Lua too (take-or-renew, release only
  by the holder).
- Writes that are merely additive go in one pipeline without MULTI
  (HINCRBY + PEXPIRE per counter hash, LPUSH + LTRIM + PEXPIRE per sample):
  one round trip per metrics flush, however many routes it carries.
- Reads of several routes are pipelined GETs, not MGET: each route's keys live
  in their own hash slot, and a multi-key command across slots fails on Cluster.
- An outage must be noticed fast and must not hang anybody: short socket
  timeouts, no client-side retries (the caller's next attempt, a second later,
  is the retry), and every connection-level failure becomes `StoreUnavailable`.
  The connection pool reconnects by itself on the next command; a subscription
  is not silently revived (messages sent while it was down are lost), it raises
  so the follower re-subscribes and re-reads everything.
- Subscriptions run on a client of their own, so a blocking read never holds a
  connection the command path needs.

URLs: redis://, rediss://, unix:// (redis-py's own parsing) and
redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db],
which asks the sentinels for the current master of service_name.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog
from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from router.core.rollout import Rollout
from router.state.base import CHANGES_CHANNEL, RESYNC, StoreIdentity, StoreUnavailable

log = structlog.get_logger("router.state")

CONNECT_TIMEOUT = 0.5
OP_TIMEOUT = 1.0
SUB_WAIT = 1.0  # one blocking read of the subscription, seconds
SUB_PING_AFTER = 5.0  # quiet this long: ask the server for a pong
SUB_DEAD_AFTER = 8.0  # quiet this long despite the ping: the connection is gone
SENTINEL_PORT = 26379

_CAS = """
local cur = redis.call('GET', KEYS[1])
local version = 0
if cur then version = tonumber(cjson.decode(cur)['version']) or 0 end
if version ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""
_RESTORE = """
local cur = redis.call('GET', KEYS[1])
local version = 0
if cur then version = tonumber(cjson.decode(cur)['version']) or 0 end
if version ~= tonumber(ARGV[1]) or version >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""
_LEASE_TAKE = """
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
_LEASE_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def rollout_key(route: str) -> str:
    return f"dr:{{{route}}}:rollout"


def history_key(route: str) -> str:
    return f"dr:{{{route}}}:history"


def counter_key(route: str, name: str) -> str:
    return f"dr:{{{route}}}:c:{name}"


def sample_key(route: str, kind: str) -> str:
    return f"dr:{{{route}}}:s:{kind}"


EPOCH_KEY = "dr:epoch"


def lease_key(name: str) -> str:
    return f"dr:{{{name}}}:lease"


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


@contextmanager
def unavailable(what: str) -> Iterator[None]:
    """Map every way of not reaching Redis to StoreUnavailable."""
    try:
        yield
    except (rex.ConnectionError, rex.TimeoutError, rex.ReadOnlyError, OSError) as exc:
        # ReadOnlyError: we reached a replica mid-failover; transient like an outage.
        raise StoreUnavailable(f"redis {what}: {exc or type(exc).__name__}") from exc


class RedisStore:
    shared = True

    def __init__(self, url: str) -> None:
        self.url = url
        self._sentinel, self._r, self._sub = _clients(url)
        self._cas = self._r.register_script(_CAS)
        self._restore = self._r.register_script(_RESTORE)
        self._take = self._r.register_script(_LEASE_TAKE)
        self._release = self._r.register_script(_LEASE_RELEASE)

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        if not await self.ping():
            log.warning("redis unreachable at start; serving on what we know", url=_safe(self.url))

    async def close(self) -> None:
        await self._sub.aclose()
        await self._r.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()

    async def ping(self) -> bool:
        try:
            with unavailable("ping"):
                return bool(await self._r.ping())
        except StoreUnavailable:
            return False

    # -- rollouts ------------------------------------------------------------
    async def get_rollout(self, route: str) -> Rollout | None:
        with unavailable("get rollout"):
            raw = await self._r.get(rollout_key(route))
        return None if raw is None else _decode(route, raw)

    async def get_rollouts(self, routes: Sequence[str]) -> dict[str, Rollout]:
        if not routes:
            return {}
        pipe = self._r.pipeline(transaction=False)
        for route in routes:
            pipe.get(rollout_key(route))
        with unavailable("get rollouts"):
            raws = await pipe.execute()
        decoded = {r: _decode(r, raw) for r, raw in zip(routes, raws, strict=True) if raw}
        return {r: rollout for r, rollout in decoded.items() if rollout is not None}

    async def cas_rollout(self, new: Rollout, expected_version: int) -> Rollout | None:
        stored = new.evolve(version=expected_version + 1)
        keys = [rollout_key(new.route)]
        args: list[str | int] = [expected_version, stored.to_json(), CHANGES_CHANNEL, new.route]
        with unavailable("cas rollout"):
            won = await self._cas(keys=keys, args=args)
        return stored if won else None

    async def restore_rollout(self, held: Rollout, expected_version: int) -> bool:
        keys = [rollout_key(held.route)]
        args: list[str | int] = [
            expected_version, held.version, held.to_json(), CHANGES_CHANNEL, held.route
        ]  # fmt: skip
        with unavailable("restore rollout"):
            return bool(await self._restore(keys=keys, args=args))

    async def announce(self, route: str) -> None:
        with unavailable("announce"):
            await self._r.publish(CHANGES_CHANNEL, route)

    async def identity(self) -> StoreIdentity:
        pipe = self._r.pipeline(transaction=False)
        pipe.set(EPOCH_KEY, uuid.uuid4().hex, nx=True)
        pipe.get(EPOCH_KEY)
        pipe.info("server")
        with unavailable("identity"):
            _, epoch, info = await pipe.execute()
        return StoreIdentity(epoch=str(epoch or ""), run_id=str(info.get("run_id", "")))

    async def subscribe(self) -> AsyncIterator[str]:
        pubsub = self._sub.pubsub(ignore_subscribe_messages=True)
        try:
            with unavailable("subscribe"):
                await pubsub.subscribe(CHANGES_CHANNEL)
            yield RESYNC
            async for route in _follow(pubsub):
                yield route
        finally:
            await pubsub.aclose()

    # -- history -------------------------------------------------------------
    async def add_history(self, route: str, entry: Mapping[str, Any], cap: int = 1000) -> None:
        fields: dict[Any, Any] = {"json": json.dumps(dict(entry), separators=(",", ":"))}
        with unavailable("add history"):
            # "~": trim whole stream nodes only; the stream may hold a little more than cap.
            await self._r.xadd(history_key(route), fields, maxlen=cap, approximate=True)

    async def history(self, route: str, count: int = 50) -> list[dict[str, Any]]:
        with unavailable("history"):
            rows: list[Any] = await self._r.xrevrange(history_key(route), count=count) or []
        return [_history_entry(sid, fields) for sid, fields in reversed(rows)]

    # -- leases --------------------------------------------------------------
    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        with unavailable("acquire lease"):
            return bool(await self._take(keys=[lease_key(name)], args=[holder, _ms(ttl)]))

    async def release_lease(self, name: str, holder: str) -> None:
        with unavailable("release lease"):
            await self._release(keys=[lease_key(name)], args=[holder])

    async def lease_holder(self, name: str) -> str | None:
        with unavailable("lease holder"):
            holder = await self._r.get(lease_key(name))
        return None if holder is None else str(holder)

    # -- counters ------------------------------------------------------------
    async def add_counters(
        self, route: str, counters: Mapping[str, Mapping[str, int]], ttl: float
    ) -> None:
        await self.add_counters_many({route: counters}, ttl)

    async def add_counters_many(
        self, batch: Mapping[str, Mapping[str, Mapping[str, int]]], ttl: float
    ) -> None:
        pipe = self._r.pipeline(transaction=False)
        for route, counters in batch.items():
            for name, fields in counters.items():
                key = counter_key(route, name)
                for field, delta in fields.items():
                    pipe.hincrby(key, field, delta)
                pipe.pexpire(key, _ms(ttl))
        if not pipe.command_stack:
            return
        with unavailable("add counters"):
            await pipe.execute()

    async def read_counters(self, route: str, names: Sequence[str]) -> dict[str, dict[str, int]]:
        pipe = self._r.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(counter_key(route, name))
        with unavailable("read counters"):
            hashes = await pipe.execute()
        return {
            name: {str(k): int(v) for k, v in found.items()}
            for name, found in zip(names, hashes, strict=True)
        }

    # -- samples -------------------------------------------------------------
    async def push_sample(self, route: str, kind: str, item: str, cap: int, ttl: float) -> None:
        key = sample_key(route, kind)
        pipe = self._r.pipeline(transaction=False)
        pipe.lpush(key, item)
        pipe.ltrim(key, 0, cap - 1)
        pipe.pexpire(key, _ms(ttl))
        with unavailable("push sample"):
            await pipe.execute()

    async def samples(self, route: str, kind: str, count: int) -> list[str]:
        if count <= 0:
            return []
        with unavailable("samples"):
            items = await self._r.lrange(sample_key(route, kind), 0, count - 1)
        return [str(i) for i in items]

    async def clear_samples(self, route: str, kind: str) -> None:
        with unavailable("clear samples"):
            await self._r.delete(sample_key(route, kind))


async def _follow(pubsub: PubSub) -> AsyncIterator[str]:
    """Route names from a live subscription; raises StoreUnavailable when it dies.

    A dead peer that never sends a FIN would leave a blocking read waiting
    forever, so a quiet connection is pinged and given up on if even the pong
    does not come back.
    """
    loop = asyncio.get_running_loop()
    heard, pinged = loop.time(), False
    while True:
        with unavailable("subscription"):
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=SUB_WAIT)
            quiet = loop.time() - heard
            if msg is None and quiet > SUB_DEAD_AFTER:
                raise rex.ConnectionError(f"subscription silent for {quiet:.1f}s")
            if msg is None and quiet > SUB_PING_AFTER and not pinged:
                await pubsub.ping()
                pinged = True
        if msg is None:
            continue
        heard, pinged = loop.time(), False
        if msg["type"] == "message":
            yield str(msg["data"])


def _decode(route: str, raw: str | bytes) -> Rollout | None:
    """A stored rollout, or None (logged) if it cannot be read: one bad value
    must not stop every other route's snapshot from refreshing."""
    try:
        return Rollout.from_json(raw)
    except (ValueError, TypeError) as exc:
        log.error("unreadable rollout in redis; ignored", route=route, error=str(exc))
        return None


def _history_entry(stream_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(fields.get("json", "{}"))
    entry["id"] = stream_id
    entry["ts"] = int(stream_id.split("-", 1)[0]) / 1000
    return entry


# -- connections -------------------------------------------------------------
def _options(retries: int = 0) -> dict[str, Any]:
    # Retry only a refused/broken connection, at once, and never a timeout: a timeout
    # may be a command that ran, and waiting twice would break the 2 s promise.
    retry = Retry(NoBackoff(), retries, supported_errors=(rex.ConnectionError,))
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": OP_TIMEOUT,
        "retry": retry,
        "decode_responses": True,
    }


def _clients(url: str) -> tuple[Sentinel | None, Redis, Redis]:
    """(sentinel manager or None, command client, subscription client).

    The command client retries once on a broken connection: after a restart,
    pooled connections to the old process are dead, and the pool does not
    always notice before sending. The cost is rare: a command that reached a
    server which then died before answering runs twice (a counter counts
    twice, a CAS reports a conflict for its own write). The subscription
    client never retries: a revived subscription would hide lost messages.
    """
    commands, subs = _options(retries=1), _options()
    if not url.startswith("redis+sentinel://"):
        return None, Redis.from_url(url, **commands), Redis.from_url(url, **subs)
    hosts, service, db, auth = parse_sentinel_url(url)
    sentinel = Sentinel(hosts, sentinel_kwargs=_options(), **commands)
    master: dict[str, Any] = {"db": db, **auth}
    return (
        sentinel,
        sentinel.master_for(service, **master, **commands),
        sentinel.master_for(service, **master, **subs),
    )


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, dict[str, str]]:
    """redis+sentinel://[user:pw@]h:p[,h:p]/service[/db] -> (hosts, service, db, auth)."""
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    hosts = [_host_port(h) for h in hostlist.split(",") if h]
    path = [p for p in parts.path.split("/") if p]
    if not hosts or not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"sentinel url must be redis+sentinel://host:port/service[/db], got {url}")
    return hosts, unquote(path[0]), int(path[1]) if len(path) == 2 else 0, _auth(userinfo)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return text, SENTINEL_PORT
    return host.strip("[]"), int(port)


def _auth(userinfo: str) -> dict[str, str]:
    if not userinfo:
        return {}
    user, sep, password = userinfo.partition(":")
    auth = {"password": unquote(password)} if sep else {"password": unquote(user)}
    if sep and user:
        auth["username"] = unquote(user)
    return auth


def _safe(url: str) -> str:
    """The url without its password, for logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return url.replace(parts.netloc, "***@" + parts.netloc.rpartition("@")[2], 1)
