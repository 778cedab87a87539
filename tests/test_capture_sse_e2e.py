"""An event stream captured at 100 % reaches the client byte for byte, and is kept assembled."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from tests.support.echo import echo_backends
from tests.support.routerproc import RouterProcess
from tests.test_capture_e2e import lines, until

PROMPT = "write to jo@example.com about the weather today"


async def read_stream(url: str) -> tuple[bytes, int, str]:
    """The raw body as it arrived, how many reads it came in, and the request id."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url + "/v1/completions/stream", json={"prompt": PROMPT, "stream": True}
        ) as resp,
    ):
        assert resp.status == 200
        chunks = [chunk async for chunk in resp.content.iter_any()]
        return b"".join(chunks), len(chunks), resp.headers.get("X-Request-Id", "")


async def test_a_captured_stream_is_byte_identical_and_recorded_assembled(tmp_path: Path) -> None:
    """The client gets exactly the backend's bytes, still in several reads (not buffered);
    the record holds the completion the events add up to, redacted."""
    sink = tmp_path / "sse.jsonl"
    async with echo_backends("llm") as b:
        direct, _, _ = await read_stream(b["llm"].url)
        config = {
            "logging": {"access_sample": 0},
            "backends": {"llm": {"url": b["llm"].url}},
            "routes": [{
                "name": "chat", "match": {"path_prefix": "/v1"}, "protocol": "openai",
                "capture": {"sink": {"file": {"path": str(sink)}}},
                "strategy": {"split": {"weights": {"llm": 100}}},
            }],
        }  # fmt: skip
        router = RouterProcess(tmp_path, config).start()
        try:
            proxied, reads, rid = await read_stream(router.url)
            await until(lambda: len(lines(sink)) >= 1)
        finally:
            router.stop()
    assert proxied == direct
    assert reads > 1  # streamed through as it came, one write per upstream read
    record = lines(sink)[0]
    assert record["id"] == rid
    completion = record["response"]["stream"]["completion"]
    text = completion["choices"][0]["text"]
    assert text.split() == ["write", "to", "[email]", "about", "the", "weather", "today", "done"]
    assert "jo@example.com" not in json.dumps(record)
