"""TLS both sides, graceful shutdown, flow control, hot reload of pools, mirrors."""

from __future__ import annotations

import asyncio
import gc
import ssl
import subprocess

import pytest

from router.config.spec import ListenSpec, TLSSpec
from router.dataplane.plane import DataPlane
from router.dataplane.server import ClientConnection
from router.dataplane.upstream import UpstreamConnection
from tests.support.dataplane import (
    ListRecorder,
    RawClient,
    backend,
    get,
    make_runtime,
    mirrored_plane,
    request,
    running_plane,
)
from tests.support.rawbackend import RawBackend, response


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> TLSSpec:
    """A self-signed certificate for 127.0.0.1 made with the openssl CLI."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return TLSSpec(cert=str(cert), key=str(key))


async def tls_backend(cert: TLSSpec) -> RawBackend:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert.cert, cert.key)
    b = RawBackend()
    b._server = await asyncio.start_server(b._accept, "127.0.0.1", 0, ssl=ctx)
    b.port = b._server.sockets[0].getsockname()[1]
    return b


async def test_https_backend_verified_with_ca_file(cert: TLSSpec) -> None:
    """An https backend is reached when its certificate verifies against ca_file."""
    b = await tls_backend(cert)
    try:
        spec = backend("tls", b.port, scheme="https", ca_file=cert.cert)
        async with running_plane(make_runtime([spec])) as p:
            resp = await request(p.port, get("/secure"))
    finally:
        await b.close()
    assert resp.status == 200
    assert b.requests[0].target == "/secure"


async def test_https_backend_unverified_cert_is_502(cert: TLSSpec) -> None:
    """Verification is on by default: a self-signed backend without ca_file gives 502."""
    b = await tls_backend(cert)
    try:
        async with running_plane(make_runtime([backend("tls", b.port, scheme="https")])) as p:
            resp = await request(p.port, get())
    finally:
        await b.close()
    assert resp.status == 502
    assert b.requests == []


async def test_tls_listener(cert: TLSSpec) -> None:
    """With listen.tls the router speaks TLS and forwards X-Forwarded-Proto: https."""
    b = await RawBackend().start()
    ctx = ssl.create_default_context(cafile=cert.cert)
    try:
        listen = ListenSpec(host="127.0.0.1", port=0, tls=cert)
        async with running_plane(make_runtime([backend("b", b.port)]), listen=listen) as p:
            client = await RawClient.open(p.port, tls=ctx)
            await client.send(get())
            resp = await client.response()
            await client.close()
    finally:
        await b.close()
    assert resp.status == 200
    assert b.requests[0].header("x-forwarded-proto") == "https"


async def test_shutdown_drains_in_flight_and_refuses_new() -> None:
    """Shutdown lets a slow in-flight request finish while new connections are refused."""
    started = asyncio.Event()

    async def handler(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await b.next_request(r)
        started.set()
        await asyncio.sleep(0.3)
        w.write(response(200, b"finished"))
        await w.drain()
        await r.read()

    b = await RawBackend(handler).start()
    plane = DataPlane(make_runtime([backend("b", b.port)]), ListRecorder(), sweep_interval=0.05)
    await plane.start()
    server = await plane.serve(ListenSpec(host="127.0.0.1", port=0))
    port = server.sockets[0].getsockname()[1]
    try:
        idle = await RawClient.open(port)
        slow = asyncio.ensure_future(request(port, get()))
        await asyncio.wait_for(started.wait(), 2)
        stopping = asyncio.ensure_future(plane.shutdown(drain_timeout=3))
        await asyncio.sleep(0.05)
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        assert await idle.read_rest(wait=2) == b""  # idle keep-alive closed at once
        await idle.close()
        resp = await slow
        await stopping
    finally:
        await b.close()
    assert resp.status == 200
    assert resp.body == b"finished"
    assert resp.header("connection") == "close"


async def test_slow_reader_pauses_backend() -> None:
    """A client that doesn't read stops the router reading the backend: buffers stay bounded."""
    sent = 0
    chunk = b"x" * 65536
    count = 1600  # 100 MiB: far beyond what loopback socket buffers can hold

    async def handler(b: RawBackend, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal sent
        await b.next_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(chunk) * count))
        for _ in range(count):
            w.write(chunk)
            await w.drain()
            sent += len(chunk)

    b = await RawBackend(handler).start()
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            client = await RawClient.open(p.port)
            await client.send(get())
            await client.head()
            await asyncio.sleep(0.5)
            stalled_at = sent
            got = 0
            while got < len(chunk) * count:  # now read it all: the backend resumes
                got += len(await asyncio.wait_for(client.reader.read(1 << 20), 5))
            await client.close()
    finally:
        await b.close()
    assert stalled_at < len(chunk) * count // 3  # kernel buffers only, not the whole body
    assert got == len(chunk) * count


async def test_apply_config_reuses_unchanged_pools() -> None:
    """A reload keeps the pool of an unchanged backend and replaces a changed one."""
    rt = make_runtime([backend("a", 1001), backend("b", 1002)])
    plane = DataPlane(rt, ListRecorder())
    before = dict(plane.pools)
    rt2 = make_runtime([backend("a", 1001), backend("b", 1003)])
    plane.apply_config(rt2.config)
    assert plane.pools["a"] is before["a"]
    assert plane.pools["b"] is not before["b"]
    assert before["b"].retired


async def test_shadow_sink_gets_the_request_and_the_primary_answer_once() -> None:
    """With mirrors decided and a sink set, the sink gets one copy: request and answer."""
    async with mirrored_plane() as (p, sink):
        raw = (
            b"POST /m?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\nX-Request-Id: m1\r\n\r\n"
            b"payload"
        )
        resp = await request(p.port, raw)
    assert resp.status == 200
    [copy] = sink.copies
    got = (copy.route, copy.backends, copy.method, copy.target, copy.body, copy.request_id)
    assert got == ("r", ("shadow",), b"POST", b"/m?x=1", b"payload", "m1")
    assert (copy.primary_status, copy.primary_body) == (200, resp.body)


async def test_uvloop_serves_requests() -> None:
    """The data plane works on uvloop too (the production loop)."""
    import uvloop

    async def main() -> int:
        b = await RawBackend().start()
        try:
            async with running_plane(make_runtime([backend("b", b.port)])) as p:
                resp = await request(
                    p.port, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
                )
                return resp.status
        finally:
            await b.close()

    def run() -> int:
        return uvloop.run(main())

    assert await asyncio.get_running_loop().run_in_executor(None, run) == 200


async def test_closed_connections_freed_without_cyclic_gc() -> None:
    """A closed client or backend connection is freed by refcounting alone (no parser cycle).

    Counted through `gc.get_objects()` rather than weak references: compiled (mypyc)
    connection classes take no weak references, and both kinds are GC-tracked.
    """

    def alive() -> tuple[int, int]:
        objs = gc.get_objects()
        client = sum(1 for o in objs if type(o) is ClientConnection)
        upstream = sum(1 for o in objs if type(o) is UpstreamConnection)
        return client, upstream

    b = await RawBackend().start()
    gc.collect()
    before = alive()
    gc.disable()  # anything still alive below is held by a cycle (or a real reference)
    try:
        async with running_plane(make_runtime([backend("b", b.port)])) as p:
            client = await RawClient.open(p.port)
            await client.send(get())
            assert (await client.response()).status == 200
            assert alive() == (before[0] + 1, before[1] + 1)  # the count sees them
            await client.close()
            for _ in range(100):
                if not p.plane.connections:
                    break
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)  # the transports drop their protocols a loop turn later
        assert alive() == before
    finally:
        gc.enable()
        await b.close()
