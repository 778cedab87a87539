"""The request path's shortcuts keep the behaviour of the long way round.

The route memo must follow a reload and stay bounded; a flattened fan-out
must still reach every recorder that records, and skip only an access log
that never logs; response heads built in one join keep every header that is
not hop-by-hop, in order.
"""

from __future__ import annotations

import asyncio
import json

from router.config.spec import LimitsSpec, ListenSpec
from router.dataplane.accesslog import AccessLog
from router.dataplane.metrics import Metrics
from router.dataplane.plane import MATCH_MEMO, DataPlane, bound_port
from router.dataplane.routing import CompiledRoute, RouteTable
from router.ops.logs import Fanout
from tests.support.dataplane import (
    ListRecorder,
    backend,
    get,
    make_runtime,
    request,
    route,
    running_plane,
)
from tests.support.rawbackend import RawBackend, read_request, response
from tests.test_accesslog import Batches


async def test_route_memo_follows_a_new_table() -> None:
    """After the runtime's table is swapped, the same request goes where the new table says."""
    a, b = await RawBackend().start(), await RawBackend().start()
    try:
        rt = make_runtime([backend("a", a.port), backend("b", b.port)])
        async with running_plane(rt) as p:
            first = await request(p.port, get("/x"))
            new = route("main", "/", "b")
            rt.table = RouteTable([CompiledRoute(new, new.strategy)])  # type: ignore[arg-type]
            second = await request(p.port, get("/x"))
    finally:
        await a.close()
        await b.close()
    assert (first.header("x-router-backend"), second.header("x-router-backend")) == ("a", "b")
    assert (len(a.requests), len(b.requests)) == (1, 1)


async def test_route_memo_is_bounded_and_answers_like_the_table() -> None:
    """Many distinct targets never grow the memo past MATCH_MEMO; every answer is the table's."""
    rt = make_runtime([backend("a", 1)], [route("one", "/one", "a"), route("all", "/", "a")])
    plane = DataPlane(rt, ListRecorder())
    for i in range(MATCH_MEMO * 2 + 7):
        target = b"/one?i=%d" % i if i % 2 else b"/other/%d" % i
        got = plane.match(rt.table, b"h", target)
        assert got is rt.table.match(b"h", target)
        assert len(plane.routes) <= MATCH_MEMO
    assert plane.match(rt.table, None, b"/one") is rt.table.by_name["one"]


class Idle(ListRecorder):
    idle = True


def test_fanout_leaves_out_an_idle_recorder() -> None:
    """A recorder that says it is idle is not called at all."""
    metrics = Metrics()
    assert Fanout(metrics, Idle()).flat() == (metrics.record,)
    assert len(Fanout(metrics, ListRecorder()).flat()) == 2


async def test_dataplane_records_through_each_fanout_target_and_the_access_log() -> None:
    """Every request reaches each recorder once, and the access log has its line."""
    b = await RawBackend().start()
    lines = Batches()
    try:
        rt = make_runtime([backend("b", b.port)])
        first, second = ListRecorder(), ListRecorder()
        plane = DataPlane(rt, Fanout(first, Idle(), second))
        plane.access = AccessLog(lines)
        await plane.start()
        port = bound_port(await plane.serve(ListenSpec(host="127.0.0.1", port=0)))
        try:
            for i in range(3):
                assert (await request(port, get(f"/r{i}?secret=1", method="PUT"))).status == 200
            await request(port, b"GET /x HTTP/1.1\r\n\r\n")  # refused: 400, logged too
        finally:
            await plane.shutdown(1.0)
            plane.access.close()
    finally:
        await b.close()
    assert [r.status for r in first.records] == [200, 200, 200, 400]
    assert [r.request_id for r in second.records] == [r.request_id for r in first.records]
    logged = lines.lines()
    assert [x["request_id"] for x in logged] == [r.request_id for r in first.records]
    assert [(x["method"], x["path"], x["status"]) for x in logged] == [
        ("PUT", "/r0", 200),
        ("PUT", "/r1", 200),
        ("PUT", "/r2", 200),
        ("GET", "/x", 400),
    ]


async def test_response_head_keeps_end_to_end_headers_in_order() -> None:
    """Backend headers reach the client in order, names lower case, hop-by-hop gone."""

    async def handler(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_request(r) is not None:
            headers = {"X-B": "2", "Connection": "keep-alive", "X-A": "1", "Set-Cookie": "c=1"}
            w.write(response(201, json.dumps({"ok": 1}).encode(), headers))
            await w.drain()

    b = await RawBackend(handler).start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            resp = await request(p.port, get("/h"))
    finally:
        await b.close()
    names = [k for k, _ in resp.headers]
    assert resp.status == 201
    assert names.index("x-b") < names.index("x-a") < names.index("set-cookie")
    assert "connection" not in names
    assert resp.header("content-length") == str(len(resp.body))
    assert names.count("x-request-id") == 1


LIMITS = LimitsSpec(max_header_bytes=2048, max_body=100_000)


async def test_head_under_limit_with_big_body_in_same_read_is_served() -> None:
    """A small head read together with a body larger than the head limit is not refused."""
    b = await RawBackend().start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)], limits=LIMITS)) as p:
            body = b"x" * 50_000
            head = b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body)
            resp = await request(p.port, head + body)
    finally:
        await b.close()
    assert resp.status == 200
    assert [r.body for r in b.requests] == [body]


async def test_many_headers_over_limit_in_one_read_is_431() -> None:
    """Many small headers adding up past the limit, in one read, get 431 before any backend."""
    b = await RawBackend().start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)], limits=LIMITS)) as p:
            extra = "".join(f"X-H{i}: {'v' * 40}\r\n" for i in range(60))  # ~3 KB of headers
            resp = await request(p.port, get("/", extra))
    finally:
        await b.close()
    assert resp.status == 431
    assert b.requests == []
