"""Acceptance for LLM routes, run as a new user would: the router as a real process in
front of OpenAI-compatible stand-ins (examples/openai_server.py), streamed chat requests
read event by event, one route per Host header:

- same:   a shadow of the same model: tokens reach the client one by one (nothing
          buffered), every text kind agrees 100 %, stream timing shows for the
          primary and the shadow (`/v1/routes/NAME/streams`, Prometheus);
- refuse: a shadow that refuses everything: refusal agreement 0 %;
- first:  a shadow-first canary of the refusing model, gated on refusal: aborted
          before any user reached it;
- slow:   a canary whose first token comes 500 ms later: aborted by the ttft gate;
- close:  a canary within 10 % of stable's first token: promoted by the ttft gate;
- models: one server with two models; the shadow's copy asks for the other one
          (`rewrite: {qwen: {json: {model: qwen-7b}}}`): it answers 200, other words.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from examples.openai_server import LLMOptions, start_openai_server
from tests.support.routerproc import RouterProcess

DELAY = 0.02  # seconds between two tokens of the stand-ins
TOKENS = 4
TEXT_KINDS = [
    {"output": "text", "kind": "length_ratio"},
    {"output": "text", "kind": "refusal"},
    {"output": "text", "kind": "json_valid"},
    {"output": "text", "kind": "overlap", "min": 0.9},
    {"output": "finish_reason", "kind": "finish_reason"},
    {"output": "tool_calls", "kind": "tool_calls"},
]
SERVERS = {
    "llm-a": LLMOptions(port=0, token_delay=DELAY, tokens=TOKENS),
    "llm-b": LLMOptions(port=0, token_delay=DELAY, tokens=TOKENS),
    "refuser": LLMOptions(port=0, token_delay=DELAY, refuse=True),
    "late": LLMOptions(port=0, token_delay=DELAY, tokens=TOKENS, first_token_delay=0.5),
    "close": LLMOptions(port=0, token_delay=DELAY, tokens=TOKENS, first_token_delay=DELAY * 0.1),
    "two": LLMOptions(("llama-3-8b", "qwen-7b"), port=0, token_delay=DELAY, tokens=TOKENS),
}


@asynccontextmanager
async def servers() -> AsyncIterator[dict[str, str]]:
    async with AsyncExitStack() as stack:
        urls = {}
        for name, opts in SERVERS.items():
            runner, port = await start_openai_server(opts)
            stack.push_async_callback(runner.cleanup)
            urls[name] = f"http://127.0.0.1:{port}"
        yield urls


def config(urls: dict[str, str]) -> dict[str, Any]:
    def route(host: str, strategy: dict[str, Any]) -> dict[str, Any]:
        match = {"path_prefix": "/v1", "host": f"{host}.test"}
        return {"name": host, "match": match, "protocol": "openai", "strategy": strategy}

    # p50: bounding a p95 from above takes a few hundred streams (tests/test_stream_gate.py)
    ttft = {"p50_ratio": 1.3, "min_requests": 30}
    steps = [{"weight": 50}, {"weight": 100}]
    analysis = {"interval": "200ms", "ttft": ttft}
    first = {"compare": "refusal", "min_agreement": 0.9, "min_requests": 30}
    return {
        "logging": {"access_sample": 0},
        "controller": {"interval": "100ms", "lease_ttl": "1s"},
        "backends": {name: {"url": url, "timeout": "5s"} for name, url in urls.items()}
        | {"qwen": {"url": urls["two"], "timeout": "5s"}},
        "routes": [
            route("same", {"shadow": {"primary": "llm-a", "shadows": ["llm-b"],
                                      "compare": TEXT_KINDS}}),
            route("refuse", {"shadow": {"primary": "llm-a", "shadows": ["refuser"],
                                        "compare": TEXT_KINDS}}),
            route("first", {"canary": {"stable": "llm-a", "candidate": "refuser", "steps": steps,
                                       "compare": TEXT_KINDS[1:2], "shadow_first": first,
                                       "analysis": {"interval": "200ms"}}}),
            route("slow", {"canary": {"stable": "llm-a", "candidate": "late", "steps": steps,
                                      "analysis": analysis}}),
            route("close", {"canary": {"stable": "llm-a", "candidate": "close", "steps": steps,
                                       "analysis": analysis}}),
            route("models", {"shadow": {"primary": "two", "shadows": ["qwen"],
                                        "rewrite": {"qwen": {"json": {"model": "qwen-7b"}}},
                                        "compare": [{"output": "text", "kind": "label"}]}}),
        ],
    }  # fmt: skip


async def chat(
    session: aiohttp.ClientSession, url: str, host: str, user: str
) -> tuple[int, list[float], str, float]:
    """One streamed chat request: (status, arrival time of each token, text, total)."""
    body = {
        "model": "llama-3-8b",
        "stream": True,
        "messages": [{"role": "user", "content": f"hi {user}"}],
    }
    headers = {"Host": f"{host}.test", "X-User-Id": user}
    started, arrivals, text = time.monotonic(), [], ""
    async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
        async for line in resp.content:
            if not line.startswith(b"data: {"):
                continue
            for choice in json.loads(line[6:])["choices"]:
                if choice["delta"].get("content"):
                    arrivals.append(time.monotonic() - started)
                    text += choice["delta"]["content"]
        return resp.status, arrivals, text, time.monotonic() - started


async def traffic(
    session: aiohttp.ClientSession, url: str, host: str, n: int, seed: int
) -> list[int]:
    statuses: list[int] = []
    for start in range(0, n, 10):
        done = await asyncio.gather(
            *(chat(session, url, host, f"u{seed}-{start + i}") for i in range(min(10, n - start)))
        )
        statuses += [d[0] for d in done]
    return statuses


def get(router: RouterProcess, path: str) -> Any:
    return router.get_json(path)


async def settled(router: RouterProcess, route: str, n: int) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        body = await asyncio.to_thread(get, router, f"/v1/routes/{route}/shadow")
        pair = next(iter(body["shadows"].values()), {"n": 0})
        if pair["n"] >= n or time.monotonic() > deadline:
            return dict(pair)
        await asyncio.sleep(0.1)


async def until_settled(
    session: aiohttp.ClientSession, router: RouterProcess, route: str
) -> dict[str, Any]:
    """Traffic until the route's rollout is aborted or promoted (at most 30 s)."""
    deadline, seed = time.monotonic() + 30, 0
    rollout: dict[str, Any] = {}
    while time.monotonic() < deadline and rollout.get("phase") not in ("aborted", "promoted"):
        await traffic(session, router.url, route, 20, seed)
        seed += 1
        rollout = (await asyncio.to_thread(get, router, f"/v1/routes/{route}"))["rollout"] or {}
    return dict(rollout)


async def test_llm_routes_shadow_and_canary(tmp_path: Path) -> None:
    """See the module docstring."""
    async with servers() as urls:
        router = RouterProcess(tmp_path, config(urls)).start()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
                status, arrivals, text, total = await chat(session, router.url, "same", "one")
                same = await traffic(session, router.url, "same", 30, 1)
                refuse = await traffic(session, router.url, "refuse", 30, 2)
                first = await until_settled(session, router, "first")
                slow = await until_settled(session, router, "slow")
                close = await until_settled(session, router, "close")
                models = await traffic(session, router.url, "models", 10, 3)
            same_pair = await settled(router, "same", 31)
            refuse_pair = await settled(router, "refuse", 30)
            models_pair = await settled(router, "models", 10)
            streams = get(router, "/v1/routes/same/streams")
            metrics = router.get_text("/metrics")
            history = get(router, "/v1/routes/first/history")["entries"]
        finally:
            router.stop()
    assert status == 200
    assert len(text.split()) == TOKENS
    assert arrivals[0] < total - (TOKENS - 2) * DELAY  # the first token came before the rest
    assert set(same) == set(refuse) == {200}
    agreement = {name: f["agreement"]["rate"] for name, f in same_pair["fields"].items()}
    assert agreement == dict.fromkeys(
        ["finish_reason", "json_valid", "length_ratio", "overlap", "refusal", "tool_calls"], 1.0
    )
    assert same_pair["agreement"]["k"] == 31  # every item agrees on every kind
    assert same_pair["fields"]["refusal"]["agreement"]["n"] == 31
    refusal = refuse_pair["fields"]["refusal"]
    assert (refusal["agreement"]["k"], refusal["agreement"]["n"]) == (0, 30)
    assert refusal["confusion"] == [["answer", "refusal", 30]]
    arms = {(a["backend"], a["role"]): a for a in streams["arms"]}
    assert set(arms) == {("llm-a", "primary"), ("llm-b", "shadow")}
    for arm in arms.values():
        assert arm["streams"] == 31
        assert arm["tokens_per_stream"] == TOKENS  # each event one token, no usage asked for
        assert DELAY * 0.5 < arm["ttft_p50"] < DELAY * 3  # first token one delay in
        assert DELAY * 0.5 < arm["inter_token_p50"] < DELAY * 3
    shadow = 'route="same",backend="llm-b",role="shadow",answer="mirrored"'
    assert f"router_stream_first_token_seconds_count{{{shadow}}} 31" in metrics
    served = 'route="same",backend="llm-a",role="primary",answer="served"'
    assert f'router_stream_inter_token_seconds_bucket{{{served},le="+Inf"}}' in metrics
    assert first["phase"] == "aborted"
    assert "never got user traffic" in first["reason"]
    assert [e["event"] for e in history] == ["start", "abort"]
    assert slow["phase"] == "aborted", slow
    assert "ttft gate failed" in slow["reason"]
    assert close["phase"] == "promoted", close
    assert set(models) == {200}
    assert (models_pair["n"], models_pair["status_mismatch"]["k"]) == (10, 0)  # qwen-7b: served
    assert models_pair["fields"]["text"]["agreement"]["k"] == 0  # ... by the other model
