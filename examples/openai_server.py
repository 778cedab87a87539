"""A stand-in LLM server speaking the OpenAI API, for demos and tests: what vLLM,
TGI or Ollama answer, with a made-up model that is fast and deterministic.

    GET  /v1/models, /health
    POST /v1/chat/completions   {"model", "messages", "stream", "n", "tools", ...}
    POST /v1/completions        {"model", "prompt", "stream", ...}

It serves the models named by `--model` (one or more; vLLM answers 404 to a
model it does not serve, and so does this). The answer to a prompt is always
the same words (a hash of the prompt and the model picks them), `--tokens`
of them, one token per stream event, `--token-delay` seconds apart, after
`--first-token-delay` more before the first one; vLLM's event shapes: a
role-only first event, `finish_reason` on the last token, then a usage event
when `stream_options.include_usage` asks for it, then `data: [DONE]`. A
request with `tools` calls the first tool. Non-streamed answers are the same
text in one `chat.completion`. `max_tokens` cuts the answer short
(finish_reason "length").

Ways to be a bad candidate: `--refuse` answers every request "I can't help
with that."; `--first-token-delay 0.5` starts late; `--garble` answers other
words. Bad requests get 400 with an OpenAI-style `{"error": {...}}`.

Run: `python -m examples.openai_server --port 8105 --model llama-3-8b --model qwen-7b`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

REFUSAL = "I can't help with that."
_VOCABULARY = (
    "the model answers every question with care and a little bit of patience so that "
    "each reader finds what they need in plain words about data drift canary shadow "
    "traffic latency tokens streams servers gates agreement weights rollouts"
)
_WORDS = tuple(_VOCABULARY.split())


@dataclass(frozen=True, slots=True)
class LLMOptions:
    models: tuple[str, ...] = ("llama-3-8b",)
    host: str = "127.0.0.1"
    port: int = 8105
    tokens: int = 20  # words per answer
    token_delay: float = 0.1  # seconds between two tokens of a stream
    first_token_delay: float = 0.0  # more seconds before the first token
    refuse: bool = False
    garble: bool = False


class BadRequest(ValueError):
    """Maps to 400 with an OpenAI-style error body."""


class NotFound(ValueError):
    """Maps to 404, as vLLM answers a model it does not serve."""


def words_for(prompt: str, count: int, salt: str = "") -> list[str]:
    """The same words for the same prompt: a hash of it walks the vocabulary."""
    seed = hashlib.blake2b((salt + prompt).encode(), digest_size=8).digest()
    state = int.from_bytes(seed, "little")
    out = []
    for _ in range(count):
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append(_WORDS[(state >> 33) % len(_WORDS)])
    return out


def prompt_of(doc: dict[str, Any]) -> str:
    if "messages" in doc:
        messages = doc["messages"]
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list")
        return json.dumps(messages, sort_keys=True)
    prompt = doc.get("prompt")
    if not isinstance(prompt, str | list):
        raise BadRequest("prompt is required")
    return json.dumps(prompt)


class LLM:
    def __init__(self, opts: LLMOptions) -> None:
        self.opts = opts
        self.served = 0

    def model(self, doc: dict[str, Any]) -> str:
        asked = doc.get("model", self.opts.models[0])
        if asked not in self.opts.models:
            raise NotFound(f"The model `{asked}` does not exist.")
        return str(asked)

    def tokens(self, doc: dict[str, Any], model: str) -> tuple[list[str], str]:
        """(the answer's tokens, finish_reason)."""
        if self.opts.refuse:
            words = REFUSAL.split(" ")
            return [(" " if i else "") + w for i, w in enumerate(words)], "stop"
        count = self.opts.tokens
        limit = doc.get("max_tokens", doc.get("max_completion_tokens"))
        if isinstance(limit, int) and 0 < limit < count:
            count, finish = limit, "length"
        else:
            finish = "stop"
        salt = ("x" if self.opts.garble else "") + ("" if model == self.opts.models[0] else model)
        words = words_for(prompt_of(doc), count, salt)
        text = [(" " if i else "") + w for i, w in enumerate(words)]
        return text, finish

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, chat=False)

    async def _answer(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        self.served += 1
        try:
            doc = json.loads(await request.read())
            if not isinstance(doc, dict):
                raise BadRequest("the body must be a JSON object")
            model = self.model(doc)
            tokens, finish = self.tokens(doc, model)
        except NotFound as exc:
            error = {"message": str(exc), "type": "NotFoundError", "code": 404}
            return web.json_response({"error": error}, status=404)
        except ValueError as exc:
            error = {"message": str(exc), "type": "invalid_request_error", "code": 400}
            return web.json_response({"error": error}, status=400)
        tool = _first_tool(doc) if chat else None
        answer = Answer(model, self.opts, doc, chat, tokens, finish, tool)
        if doc.get("stream"):
            return await answer.stream(request)
        await asyncio.sleep(self.opts.first_token_delay + self.opts.token_delay * len(tokens))
        return web.json_response(answer.whole())

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "owned_by": "example"} for m in self.opts.models]
        return web.json_response({"object": "list", "data": data})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({})


def _first_tool(doc: dict[str, Any]) -> str | None:
    tools = doc.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[0], dict):
        fn = tools[0].get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if isinstance(name, str):
            return name
    return None


class Answer:
    """One answer, streamed or whole, in the OpenAI shapes."""

    def __init__(
        self,
        model: str,
        opts: LLMOptions,
        doc: dict[str, Any],
        chat: bool,
        tokens: list[str],
        finish: str,
        tool: str | None,
    ) -> None:
        self.model = model
        self.opts = opts
        self.doc = doc
        self.chat = chat
        self.tokens = tokens
        self.finish = "tool_calls" if tool else finish
        self.tool = tool
        self.n = doc.get("n", 1) if isinstance(doc.get("n", 1), int) else 1
        prefix = "chatcmpl" if chat else "cmpl"
        self.id = (
            f"{prefix}-{hashlib.blake2b(str(time.time()).encode(), digest_size=6).hexdigest()}"
        )
        self.created = int(time.time())
        self.usage = {
            "prompt_tokens": len(prompt_of(doc).split()),
            "completion_tokens": len(tokens),
            "total_tokens": len(prompt_of(doc).split()) + len(tokens),
        }

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def whole(self) -> dict[str, Any]:
        text = "".join(self.tokens)
        choices = []
        for i in range(self.n):
            if not self.chat:
                choices.append({"index": i, "text": text, "finish_reason": self.finish})
                continue
            message: dict[str, Any] = {"role": "assistant", "content": None if self.tool else text}
            if self.tool:
                message["tool_calls"] = [_call(self.tool, i)]
            choices.append({"index": i, "message": message, "finish_reason": self.finish})
        obj = "chat.completion" if self.chat else "text_completion"
        return {**self._head(obj), "choices": choices, "usage": self.usage}

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        body = {**self._head(obj), "choices": choices, **extra}
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    def _choice(self, i: int, token: str | None, finish: str | None) -> dict[str, Any]:
        if not self.chat:
            return {"index": i, "text": token or "", "logprobs": None, "finish_reason": finish}
        delta: dict[str, Any] = {} if token is None else {"content": token}
        if token is not None and self.tool:
            delta = {"tool_calls": [{"index": 0, **_call(self.tool, i)}]}
        return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}

    async def stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if self.chat:
            role = {"role": "assistant", "content": ""}
            await resp.write(self._event([{"index": i, "delta": role} for i in range(self.n)]))
        await asyncio.sleep(self.opts.first_token_delay)
        tokens = self.tokens[:1] if self.tool else self.tokens
        for k, token in enumerate(tokens):
            await asyncio.sleep(self.opts.token_delay)
            last = self.finish if k == len(tokens) - 1 else None
            await resp.write(self._event([self._choice(i, token, last) for i in range(self.n)]))
        options = self.doc.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            await resp.write(self._event([], usage=self.usage))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _call(name: str, i: int) -> dict[str, Any]:
    return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": "{}"}}


def build_app(opts: LLMOptions) -> web.Application:
    llm = LLM(opts)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", llm.chat)
    app.router.add_post("/v1/completions", llm.completions)
    app.router.add_get("/v1/models", llm.models)
    app.router.add_get("/health", llm.health)
    return app


async def start_openai_server(opts: LLMOptions) -> tuple[web.AppRunner, int]:
    """Serve on opts.host:opts.port (0: a free port); returns the runner and the port."""
    runner = web.AppRunner(build_app(opts), access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((opts.host, opts.port))
    await web.SockSite(runner, sock).start()
    return runner, int(sock.getsockname()[1])


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="OpenAI-compatible stand-in LLM server.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8105)
    p.add_argument("--model", action="append", help="a model served (repeat for more)")
    p.add_argument("--tokens", type=int, default=20, help="words per answer")
    p.add_argument("--token-delay", type=float, default=0.1, help="seconds between tokens")
    p.add_argument("--first-token-delay", type=float, default=0.0, help="more before the first")
    p.add_argument("--refuse", action="store_true", help="refuse every request")
    p.add_argument("--garble", action="store_true", help="answer other words")
    a = p.parse_args(argv)
    models = tuple(a.model or ["llama-3-8b"])
    opts = LLMOptions(
        models, a.host, a.port, a.tokens, a.token_delay, a.first_token_delay, a.refuse, a.garble
    )
    web.run_app(build_app(opts), host=opts.host, port=opts.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
