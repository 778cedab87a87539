"""Mirror copies taken by the exchange: exactly the request body, once, whatever the reads."""

from __future__ import annotations

from tests.support.dataplane import RawClient, mirrored_plane


def post(path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def test_pipelined_body_mirrored_once() -> None:
    """A pipelined POST whose body was read before its turn is copied once, not twice."""
    async with mirrored_plane() as (p, sink):
        client = await RawClient.open(p.port)
        try:
            await client.send(post("/one", b"first-body") + post("/two", b"second-body"))
            statuses = [(await client.response()).status for _ in range(2)]
        finally:
            await client.close()
    assert statuses == [200, 200]
    got = [(c.target, c.body, c.primary_status) for c in sink.copies]
    assert got == [(b"/one", b"first-body", 200), (b"/two", b"second-body", 200)]


async def test_body_split_over_reads_mirrored_whole() -> None:
    """A body arriving in several reads after its head is copied whole, in order."""
    async with mirrored_plane() as (p, sink):
        client = await RawClient.open(p.port)
        try:
            raw = post("/s", b"abcdefghij")
            await client.send(raw[:-6])
            await client.send(raw[-6:])
            status = (await client.response()).status
        finally:
            await client.close()
    assert status == 200
    assert [c.body for c in sink.copies] == [b"abcdefghij"]
