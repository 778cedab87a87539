"""A human review desk and a scripted model, for the automation ladder's tests.

Each request body is `{"id": i}`; the truth of item i is `truth(i)`. The desk
(the "human") answers `{"label": ...}`, right unless told otherwise; the model
answers `{"label", "confidence"}` with a label and confidence chosen per item
by functions a test may swap at any time (an injected accuracy drop). Both
record what they answered per request id, so a test computes every expected
figure from what was actually sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

CLASSES = ("cat", "dog", "fox")


def truth(i: int) -> str:
    return CLASSES[i % 3]


def wrong(i: int) -> str:
    return CLASSES[(i + 1) % 3]


def always(i: int) -> bool:
    return True


@dataclass
class Scripted:
    """One backend: answers item i, records (request id, label) it answered."""

    name: str
    right: Callable[[int], bool] = always  # whether item i gets the true label
    confidence: Callable[[int], float] | None = None  # None: no confidence field
    port: int = 0
    answered: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        i = int(body["id"])
        label = truth(i) if self.right(i) else wrong(i)
        self.answered[request.headers.get("X-Request-Id", "")] = label
        answer: dict[str, Any] = {"label": label}
        if self.confidence is not None:
            answer["confidence"] = self.confidence(i)
        return web.json_response(answer)


@asynccontextmanager
async def serving(*backends: Scripted) -> AsyncIterator[tuple[Scripted, ...]]:
    """Each backend on its own loopback port until the block ends."""
    runners = []
    try:
        for b in backends:
            app = web.Application()
            app.router.add_post("/{tail:.*}", b.handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            runners.append(runner)
            b.port = runner.addresses[0][1]
        yield backends
    finally:
        for runner in runners:
            await runner.cleanup()


@dataclass(frozen=True)
class Hit:
    i: int
    status: int
    backend: str
    rid: str
    label: str | None


async def send(
    url: str,
    ids: range | list[int],
    concurrency: int = 16,
    answered: asyncio.Queue[Hit] | None = None,
) -> list[Hit]:
    """POST {"id": i} for every id, `concurrency` at a time; every answer recorded (and
    put on `answered` as it arrives, for a test that acts at a given point of the load)."""
    out: list[Hit] = []
    queue = list(ids)

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            i = queue.pop(0)
            async with session.post(url + "/predict", json={"id": i}) as resp:
                body = await resp.json(content_type=None)
                label = body.get("label") if isinstance(body, dict) else None
                backend = resp.headers.get("X-Router-Backend", "")
                hit = Hit(i, resp.status, backend, resp.headers["X-Request-Id"], label)
                out.append(hit)
                if answered is not None:
                    answered.put_nowait(hit)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return out


async def post_labels(admin: str, hits: list[Hit]) -> dict[str, Any]:
    """The true label of every hit, in batches of 500; the outcomes summed."""
    total: dict[str, Any] = {}
    headers = {"Authorization": "Bearer test-token"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for start in range(0, len(hits), 500):
            batch = [{"request_id": h.rid, "label": truth(h.i)} for h in hits[start : start + 500]]
            async with session.post(admin + "/v1/feedback", json=batch) as resp:
                body = await resp.json()
                assert resp.status == 202, body
            for key in ("accepted", "matched", "duplicate", "mismatched", "unknown"):
                total[key] = total.get(key, 0) + body[key]
    return total


def automation_route(
    model: str, desk: str, level: str, state_url: str | None, **block: Any
) -> dict[str, Any]:
    """A config with one automation route `inspect` (labels read at $.label)."""
    strategy = {"model": "model", "human": "desk", "level": level, **block}
    config: dict[str, Any] = {
        "logging": {"access_sample": 0},
        "controller": {"interval": "100ms"},
        "backends": {"model": {"url": model, "timeout": "2s"}, "desk": {"url": desk}},
        "routes": [
            {
                "name": "inspect",
                "match": {"path_prefix": "/"},
                "drift": {"outputs": ["$.label"], "reference": 50},
                "strategy": {"automation": strategy},
            }
        ],
    }
    if state_url:
        config["state"] = {"url": state_url, "poll_interval": "1s"}
    return config


async def _serve_forever(port: int) -> None:
    model = Scripted("model", confidence=lambda i: 0.99)
    app = web.Application()
    app.router.add_post("/{tail:.*}", model.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":  # a model as its own process, for a test to SIGKILL
    import sys

    asyncio.run(_serve_forever(int(sys.argv[1])))
