"""Per-arm request rewrite: the candidate's request on the client's path, a shadow's
copy off it; the primary's never."""

from __future__ import annotations

import json
from typing import Any

import pytest

from router.config.reader import parse
from router.config.spec import MatchSpec, RouteSpec
from router.core.confkit import ConfigError
from router.core.rewrite import Rewrite
from router.core.rollout import Rollout
from strategies.base import EVERY_COPY, Decision
from tests.support.dataplane import RawClient, backend, make_runtime, running_plane
from tests.support.rawbackend import RawBackend

QWEN = Rewrite((("model", '"qwen-7b"'), ("max_tokens", "64")), ((b"x-arm", b"candidate"),))


class Rewritten:
    """A strategy that sends everything to one backend with a rewrite."""

    override_header: bytes | None = None
    copies = EVERY_COPY

    def __init__(self, target: str, rewrite: Rewrite) -> None:
        self.decision = Decision(target, "canary", rewrite=rewrite)

    def backends(self) -> tuple[str, ...]:
        return (self.decision.primary,)

    def decide(self, key: int, live: Rollout | None, override: bytes | None) -> Decision:
        return self.decision


def test_the_body_gets_its_members() -> None:
    body = QWEN.body(b'{"model": "llama", "messages": [], "stream": true}')
    assert json.loads(body or b"") == {
        "model": "qwen-7b", "messages": [], "stream": True, "max_tokens": 64,
    }  # fmt: skip
    assert QWEN.body(b"[1, 2]") is None
    assert QWEN.body(b"not json") is None
    assert Rewrite((), ((b"x-a", b"1"),)).body(b"anything") == b"anything"  # headers only
    assert QWEN.lines == b"x-arm: candidate\r\n"


async def echoed(raw: bytes | list[bytes]) -> tuple[int, dict[str, Any]]:
    """Send `raw` (in pieces if a list) through a rewriting route; what the backend got."""
    b = await RawBackend().start()
    spec = RouteSpec("chat", MatchSpec(path_prefix="/"), "fixed", Rewritten("qwen", QWEN))
    try:
        async with running_plane(make_runtime([backend("qwen", b.port)], [spec])) as p:
            client = await RawClient.open(p.port)
            for piece in raw if isinstance(raw, list) else [raw]:
                await client.send(piece)
            resp = await client.response()
            await client.close()
    finally:
        await b.close()
    return resp.status, json.loads(resp.body)


def post(body: bytes, extra: str = "") -> bytes:
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + extra.encode() + b"\r\n" + body


async def test_a_candidate_request_is_rewritten_with_its_new_length() -> None:
    body = b'{"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}]}'
    status, got = await echoed(post(body, "X-Arm: client\r\n"))
    assert status == 200
    sent = json.loads(str(got["body"]))
    assert (sent["model"], sent["max_tokens"]) == ("qwen-7b", 64)
    headers = dict(got["headers"])
    assert headers["x-arm"] == "candidate"  # the client's is replaced, not doubled
    assert [h for h in got["headers"] if h[0] == "x-arm"] == [["x-arm", "candidate"]]
    assert headers["content-length"] == str(len(str(got["body"]).encode("latin-1")))


async def test_a_body_in_pieces_and_chunked_is_held_until_its_end() -> None:
    head = b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    pieces = [b'{"mode', b'l": "x", "', b'p": 1', b"}"]
    parts = [head, *(b"%x\r\n%b\r\n" % (len(x), x) for x in pieces), b"0\r\n\r\n"]
    status, got = await echoed(parts)
    assert status == 200
    assert json.loads(str(got["body"])) == {"model": "qwen-7b", "p": 1, "max_tokens": 64}
    assert got["chunked"] is False


async def test_a_body_that_is_not_a_json_object_gets_400_naming_the_rewrite() -> None:
    status, got = await echoed(post(b"[1, 2, 3]"))
    assert status == 400
    assert got["error"] == "qwen needs a JSON object to rewrite: not one"


async def test_a_request_without_body_gets_the_headers() -> None:
    status, got = await echoed(b"GET /v1/models HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 200
    assert dict(got["headers"])["x-arm"] == "candidate"
    assert "content-length" not in dict(got["headers"])


def canary(rewrite: str) -> str:
    return (
        "backends:\n  llama: {url: http://127.0.0.1:1}\n  qwen: {url: http://127.0.0.1:1}\n"
        "routes:\n  - name: chat\n    match: {path_prefix: /v1}\n    protocol: openai\n"
        "    strategy:\n      canary:\n        stable: llama\n        candidate: qwen\n"
        f"        steps: [{{weight: 10}}, {{weight: 100}}]\n        rewrite: {rewrite}\n"
    )


def test_config_rewrites_the_candidate_only() -> None:
    spec = parse(canary("{qwen: {json: {model: qwen-7b}, headers: {X-Arm: b}}}")).routes[0]
    rewrite = spec.strategy.rewrite_for("qwen")  # type: ignore[attr-defined]
    assert rewrite == Rewrite((("model", '"qwen-7b"'),), ((b"x-arm", b"b"),))
    assert spec.strategy.rewrite_for("llama") is None  # type: ignore[attr-defined]
    with pytest.raises(ConfigError) as info:
        parse(
            canary("{llama: {json: {model: x}}, other: {json: {a: 1}}, qwen: {headers: {Host: x}}}")
        )
    where = "routes[0].strategy.canary.rewrite"
    assert info.value.errors == [
        f"{where}.llama: the primary gets the client's request as sent: rewrite a shadow or "
        "the candidate (qwen)",
        f"{where}.other: is not an arm of this route (qwen)",
        f"{where}.qwen.headers.Host: must be a header name the router does not frame the "
        "message with",
        f"{where}.qwen: needs json or headers to rewrite",
    ]


def test_a_shadow_copy_is_rewritten_by_its_lane() -> None:
    text = (
        "backends:\n  llama: {url: http://127.0.0.1:1}\n  qwen: {url: http://127.0.0.1:1}\n"
        "routes:\n  - name: chat\n    match: {path_prefix: /v1}\n    protocol: openai\n"
        "    strategy:\n      shadow:\n        primary: llama\n        shadows: [qwen]\n"
        "        rewrite: {qwen: {json: {model: qwen-7b}}}\n"
    )
    shadow = parse(text).routes[0].strategy
    assert shadow.rewrite_for("qwen") == Rewrite((("model", '"qwen-7b"'),))  # type: ignore[attr-defined]
