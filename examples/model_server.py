"""A tiny iris-like model server with fault injection, for demos and tests.

The model is a linear softmax over three labels. Its weights come from a
generator seeded by a fixed base seed plus a small perturbation seeded by the
version name, so `v1` and `v2` agree on most inputs but not all: that is what a
shadow comparison or a canary's agreement gate should see. Inputs of any length
are accepted; feature i uses weight row i modulo the table size.

Faults are drawn per request from one `random.Random` (seeded with `--seed` for
repeatable runs), in this order:

- drop-rate: the connection is closed without an answer. The client sees the
  socket close (or reset) before any response byte; aiohttp's handler then
  returns into a closed transport and discards the response.
- latency-ms (+ uniform jitter-ms): an `asyncio.sleep` before answering.
- error-rate: a 500 with a JSON error body.
- constant-label / wrong-rate: the label is forced, or replaced by a different
  one on that share of requests (probabilities are left as computed, so the
  confidence no longer matches the label: as a broken model would).

Run: `python -m examples.model_server --port 8101 --version v1`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import socket
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from aiohttp import web

LABELS: tuple[str, ...] = ("setosa", "versicolor", "virginica")
_ROWS = 64  # weight rows; longer inputs wrap around
_BASE_SEED = 20240601
_VERSION_SPREAD = 0.35  # how far a version's weights move from the shared base


@dataclass(frozen=True, slots=True)
class ModelOptions:
    version: str = "v1"
    host: str = "127.0.0.1"
    port: int = 8101
    error_rate: float = 0.0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    wrong_rate: float = 0.0
    constant_label: str | None = None
    drop_rate: float = 0.0
    seed: int | None = None
    unhealthy: bool = False


class BadInput(ValueError):
    """The request body is not a usable prediction request (maps to 400)."""


def _version_seed(version: str) -> int:
    # hash() is salted per process; a digest keeps weights stable across runs.
    return int.from_bytes(hashlib.blake2b(version.encode(), digest_size=4).digest(), "big")


class LinearModel:
    """Deterministic linear softmax classifier; same version, same weights."""

    def __init__(self, version: str) -> None:
        base = np.random.default_rng(_BASE_SEED)
        shift = np.random.default_rng(_version_seed(version))
        n = len(LABELS)
        self.weights = base.normal(size=(_ROWS, n)) + _VERSION_SPREAD * shift.normal(
            size=(_ROWS, n)
        )
        self.bias = base.normal(scale=0.2, size=n) + _VERSION_SPREAD * shift.normal(
            scale=0.2, size=n
        )

    def predict(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        rows = self.weights[np.arange(features.size) % _ROWS]
        logits = features @ rows + self.bias
        exp = np.exp(logits - logits.max())
        result: npt.NDArray[np.float64] = exp / exp.sum()
        return result


def parse_features(payload: Any) -> npt.NDArray[np.float64]:
    """Pull a flat float vector out of `{"features": [...]}` or a V2 `inputs` body."""
    if isinstance(payload, dict) and "features" in payload:
        raw = payload["features"]
    elif (
        isinstance(payload, dict) and isinstance(payload.get("inputs"), list) and payload["inputs"]
    ):
        first = payload["inputs"][0]
        raw = first.get("data") if isinstance(first, dict) else None
    else:
        raise BadInput('expected {"features": [numbers]} or {"inputs": [{"data": [...]}]}')
    try:
        vector = np.asarray(raw, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise BadInput(f"features must be numbers: {exc}") from None
    if vector.size == 0 or not np.all(np.isfinite(vector)):
        raise BadInput("features must be a non-empty list of finite numbers")
    return vector


class ModelService:
    """The request handlers plus the fault dice; one per application."""

    def __init__(self, opts: ModelOptions) -> None:
        self.opts = opts
        self.model = LinearModel(opts.version)
        self.rng = random.Random(opts.seed)

    def answer(self, features: npt.NDArray[np.float64]) -> dict[str, Any]:
        probs = self.model.predict(features)
        label = LABELS[int(probs.argmax())]
        if self.opts.constant_label is not None:
            label = self.opts.constant_label
        elif self.rng.random() < self.opts.wrong_rate:
            label = self.rng.choice([x for x in LABELS if x != label])
        return {
            "label": label,
            "probabilities": [round(float(p), 6) for p in probs],
            "confidence": round(float(probs.max()), 6),
            "model": self.opts.version,
        }

    async def _delay(self) -> None:
        extra = self.rng.uniform(0.0, self.opts.jitter_ms) if self.opts.jitter_ms > 0 else 0.0
        total = self.opts.latency_ms + extra
        if total > 0:
            await asyncio.sleep(total / 1000.0)

    async def predict(self, request: web.Request) -> web.StreamResponse:
        if self.rng.random() < self.opts.drop_rate and request.transport is not None:
            request.transport.close()
            return web.Response(status=500)  # goes nowhere: the transport is closed
        await self._delay()
        if self.rng.random() < self.opts.error_rate:
            return _error(500, "injected failure", self.opts.version)
        try:
            features = parse_features(json.loads(await request.read()))
        except (ValueError, UnicodeDecodeError) as exc:  # BadInput and JSONDecodeError
            return _error(400, str(exc), self.opts.version)
        return web.json_response(self.answer(features))

    async def health(self, request: web.Request) -> web.Response:
        status = "unhealthy" if self.opts.unhealthy else "ok"
        body = {"status": status, "model": self.opts.version}
        return web.json_response(body, status=503 if self.opts.unhealthy else 200)


def _error(status: int, message: str, version: str) -> web.Response:
    return web.json_response({"error": message, "model": version}, status=status)


def build_app(opts: ModelOptions) -> web.Application:
    service = ModelService(opts)
    app = web.Application()
    app.router.add_post("/predict", service.predict)
    app.router.add_post("/v2/models/{name}/infer", service.predict)
    app.router.add_get("/health", service.health)
    app.router.add_get("/v2/health/ready", service.health)
    return app


async def start_model_server(opts: ModelOptions) -> tuple[web.AppRunner, int]:
    """Serve on opts.host, port 0 (ephemeral); returns the runner and the bound port.

    The caller owns the runner: `await runner.cleanup()` stops it.
    """
    runner = web.AppRunner(build_app(opts), access_log=None)
    await runner.setup()
    # Binding the socket ourselves is the public way to learn the ephemeral port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((opts.host, 0))
        port: int = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    return runner, port


def parse_args(argv: list[str] | None = None) -> ModelOptions:
    p = argparse.ArgumentParser(description="Example model server with fault injection.")
    p.add_argument("--port", type=int, default=8101)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--version", default="v1", help="model version name; seeds the weights")
    p.add_argument("--error-rate", type=float, default=0.0, help="share answered with 500")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added delay per request")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="uniform extra delay, 0..N")
    p.add_argument("--wrong-rate", type=float, default=0.0, help="share with a wrong label")
    p.add_argument("--constant-label", default=None, help="always answer this label")
    p.add_argument("--drop-rate", type=float, default=0.0, help="share of dropped connections")
    p.add_argument("--seed", type=int, default=None, help="seed for the fault dice")
    p.add_argument("--unhealthy", action="store_true", help="health endpoint answers 503")
    a = p.parse_args(argv)
    return ModelOptions(
        version=a.version,
        host=a.host,
        port=a.port,
        error_rate=a.error_rate,
        latency_ms=a.latency_ms,
        jitter_ms=a.jitter_ms,
        wrong_rate=a.wrong_rate,
        constant_label=a.constant_label,
        drop_rate=a.drop_rate,
        seed=a.seed,
        unhealthy=a.unhealthy,
    )


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    url = f"http://{opts.host}:{opts.port}"
    web.run_app(
        build_app(opts),
        host=opts.host,
        port=opts.port,
        access_log=None,
        print=lambda _msg: print(f"model server {opts.version} listening on {url}", flush=True),
    )


if __name__ == "__main__":
    main()
