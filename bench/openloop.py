"""A fixed-rate load: latency at the same load, not at saturation.

wrk is closed-loop: each connection sends its next request when the last one
answered, so it measures a saturated server, where any extra CPU shows up as
latency. "The same load" needs an open loop: requests are scheduled at a fixed
rate whatever happens, and each latency is measured from the request's
*scheduled* time, so a stall also counts for the requests it delayed (no
coordinated omission). Connection i sends requests i, i+N, i+2N, ... of the
schedule over its own keep-alive connection.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import uvloop

from bench.targets import PATH, PROBE_BODY


@dataclass(frozen=True, slots=True)
class OpenLoopResult:
    rate: float
    sent: int
    failed: int
    p50_ms: float
    p99_ms: float
    max_ms: float = 0.0


def _request(port: int) -> bytes:
    return (
        b"POST %b HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%b" % (PATH.encode(), port, len(PROBE_BODY), PROBE_BODY)
    )


async def _read_answer(reader: asyncio.StreamReader) -> bool:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return head.startswith(b"HTTP/1.1 200")


async def _connection(
    port: int, index: int, conns: int, rate: float, t0: float, count: int, out: list[float]
) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request, failed = _request(port), 0
    try:
        for k in range(index, count, conns):
            scheduled = t0 + k / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(request)
            ok = await _read_answer(reader)
            out.append(time.perf_counter() - scheduled)
            failed += not ok
    finally:
        writer.close()
    return failed


async def _run(port: int, rate: float, seconds: float, conns: int) -> OpenLoopResult:
    count = int(rate * seconds)
    latencies: list[float] = []
    t0 = time.perf_counter() + 0.2
    tasks = [_connection(port, i, conns, rate, t0, count, latencies) for i in range(conns)]
    failed = sum(await asyncio.gather(*tasks))
    latencies.sort()
    return OpenLoopResult(
        rate, len(latencies), failed, _ms(latencies, 0.5), _ms(latencies, 0.99), _ms(latencies, 1)
    )


def _ms(ordered: list[float], q: float) -> float:
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(
    port: int, *, rate: float = 2000.0, seconds: float = 10.0, conns: int = 16
) -> OpenLoopResult:
    """`rate` requests a second for `seconds` over `conns` keep-alive connections."""
    return uvloop.run(_run(port, rate, seconds, conns))
