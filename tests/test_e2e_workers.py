"""`router --workers N`: N processes on one port acting as one router through Redis."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from tests.support.backends import named_backends
from tests.support.redis_server import RedisServer
from tests.support.routerproc import RouterProcess
from tests.test_e2e_split import fan_out, split_config


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def worker_pids(supervisor: int) -> set[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return {int(pid) for pid in children}


@contextlib.asynccontextmanager
async def two_workers(
    tmp_path: Path, redis: RedisServer, access_file: Path | None = None
) -> AsyncIterator[RouterProcess]:
    """`router --workers 2` on Redis, a 50/50 split over two named backends."""
    async with named_backends("a", "b") as backends:
        config = split_config(backends, {"a": 50, "b": 50})
        config["state"] = {"url": redis.url}
        if access_file is not None:  # a line per request, each worker counting its own
            config["logging"] = {"access_sample": 1, "access_file": str(access_file)}
        yield RouterProcess(tmp_path, config).start("--workers", "2")


async def test_two_workers_share_the_port_and_stop_together(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    """Both workers answer on one port with the same sticky choices; SIGTERM stops both."""
    async with two_workers(tmp_path, fresh_redis) as router:
        assert router.proc is not None
        supervisor = router.proc.pid
        users = [f"user-{i}" for i in range(400)]
        try:
            pids = worker_pids(supervisor)
            before = {pid: cpu_ticks(pid) for pid in pids}
            first = await fan_out(router.url, users, concurrency=32)
            second = await fan_out(router.url, users, concurrency=32)
            busy = [pid for pid in pids if cpu_ticks(pid) > before[pid]]
        finally:
            code = router.stop()
    assert len(pids) == 2
    assert len(busy) == 2  # SO_REUSEPORT spread the connections over both workers
    assert first == second
    assert 0.4 < Counter(first)["b"] / len(users) < 0.6
    assert code == 0
    await asyncio.sleep(0.2)
    assert not any(alive(pid) for pid in pids)  # the workers exited with the supervisor


def requests_total(metrics: str) -> int:
    """The sum of every router_requests_total sample in a /metrics page."""
    total = 0
    for line in metrics.splitlines():
        if line.startswith("router_requests_total{"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def gauge(metrics: str, name: str) -> float | None:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def test_metrics_of_worker_0_count_every_worker(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    """/metrics (served by worker 0) counts the requests every worker answered, and adds
    up the workers' other counters (here: each one's access log lines)."""
    async with two_workers(tmp_path, fresh_redis, tmp_path / "access.log") as router:
        users = [f"user-{i}" for i in range(300)]
        try:
            # 32 connections spread over 2 workers by SO_REUSEPORT: all on one is 2**-31
            await fan_out(router.url, users, concurrency=32)
            page, deadline = "", asyncio.get_running_loop().time() + 5.0
            while asyncio.get_running_loop().time() < deadline:  # snapshots: once a second
                page = await asyncio.to_thread(router.get_text, "/metrics")
                # both snapshots in: a worker's first one comes a second after its start
                if (
                    requests_total(page) == len(users)
                    and gauge(page, "router_metrics_workers") == 2
                    and gauge(page, "router_access_log_lines_total") == len(users)
                ):
                    break
                await asyncio.sleep(0.2)
        finally:
            router.stop()
    assert gauge(page, "router_metrics_workers") == 2
    assert requests_total(page) == len(users)
    assert gauge(page, "router_access_log_lines_total") == len(users)
    assert page.count("# TYPE router_access_log_lines_total ") == 1


def reaped(pid: int) -> bool:
    """Gone from the process table: not running, and not a zombie left unreaped."""
    return not Path(f"/proc/{pid}").exists()


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 8.0) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        with contextlib.suppress(OSError):  # worker 0 (the admin API) may be restarting
            if await check():
                return True
        await asyncio.sleep(0.1)
    return False


async def test_a_killed_worker_is_restarted_and_its_counts_kept(
    tmp_path: Path, fresh_redis: RedisServer
) -> None:
    """SIGKILL a worker, then worker 0: each is reaped and started again at once;
    router_metrics_workers says 2 again, and no request counted before is lost."""
    async with two_workers(tmp_path, fresh_redis) as router:
        assert router.proc is not None
        supervisor, users = router.proc.pid, [f"user-{i}" for i in range(200)]
        page = ""

        served = 0

        async def counted() -> bool:
            nonlocal page
            page = await asyncio.to_thread(router.get_text, "/metrics")
            return requests_total(page) == served and gauge(page, "router_metrics_workers") == 2

        async def replaced(victim: int) -> bool:
            return reaped(victim) and len(worker_pids(supervisor) - {victim}) == 2

        try:
            for victim_is_zero in (False, True):
                await fan_out(router.url, users, concurrency=32)
                served += len(users)
                assert await until(counted), page
                await asyncio.sleep(1.2)  # every worker's own snapshot holds its counts
                zero = (await asyncio.to_thread(router.get_json, "/v1/status"))["pid"]
                pids = worker_pids(supervisor)
                victim = zero if victim_is_zero else next(iter(pids - {zero}))
                os.kill(victim, signal.SIGKILL)
                assert await until(functools.partial(replaced, victim))
                assert await until(counted), page
        finally:
            code = router.stop()
    assert code == 0, router.log()
