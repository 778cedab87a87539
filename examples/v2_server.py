"""A stand-in model server speaking the Open Inference Protocol (KServe V2), for
demos and tests: what MLServer or Triton answer for an iris-like classifier.

    GET  /v2/health/live, /v2/health/ready, /v2, /v2/models/NAME[/versions/V][/ready]
    POST /v2/models/NAME[/versions/V]/infer

One input tensor (any name) of shape [N, F] (FP32, FP64 or INT*), `data` nested
or flat row-major, or as raw little-endian bytes after a JSON header (the
binary data extension, `Inference-Header-Content-Length`). N rows in, N rows
out: `predict` (INT64, shape [N, 1], the class index, as MLServer's sklearn
runtime answers) and `predict_proba` (FP64, [N, 3]). The model is
examples/model_server.py's linear softmax, row by row, so two servers of the
same `--version` agree on every row. `--constant-class K` makes a broken
candidate: it answers class K for every row. Bad requests get 400 with
`{"error": ...}`, like the real servers. Like MLServer (Starlette's GZipMiddleware,
on by default) answers of 500 bytes or more are gzipped for a client that accepts
gzip, as `requests` and aiohttp do by default (`gzip_min=None`: never).

Run: `python -m examples.v2_server --port 8103 --version v1`.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from aiohttp import web

from examples.model_server import LABELS, LinearModel

MODEL = "iris"
_DTYPES = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8"}


@dataclass(frozen=True, slots=True)
class V2Options:
    version: str = "v1"
    host: str = "127.0.0.1"
    port: int = 8103
    constant_class: int | None = None
    name: str = MODEL
    gzip_min: int | None = 500  # MLServer's GZipMiddleware default


class BadRequest(ValueError):
    """Maps to 400 {"error": ...}."""


def _header_and_tail(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    cut = int(header_length) if header_length else len(body)
    try:
        doc = json.loads(body[:cut])
    except ValueError as exc:
        raise BadRequest(f"request is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("request must be a JSON object")
    return doc, body[cut:]


def input_matrix(doc: dict[str, Any], tail: bytes) -> npt.NDArray[np.float64]:
    """The first input tensor as an [N, F] float matrix."""
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs or not isinstance(inputs[0], dict):
        raise BadRequest("inputs must be a list of tensors")
    tensor = inputs[0]
    shape = tensor.get("shape")
    if not isinstance(shape, list) or len(shape) != 2 or not all(type(d) is int for d in shape):
        raise BadRequest(f"input shape must be [N, features], got {shape!r}")
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    try:
        if size is not None:
            dtype = _DTYPES[str(tensor.get("datatype"))]
            flat = np.frombuffer(tail[:size], dtype=dtype).astype(np.float64)
        else:
            flat = np.asarray(tensor.get("data"), dtype=np.float64).ravel()
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest(f"input data unreadable: {exc}") from None
    if flat.size != math.prod(shape):
        raise BadRequest(f"{flat.size} values do not fit shape {shape}")
    return flat.reshape(shape)


class V2Service:
    def __init__(self, opts: V2Options) -> None:
        self.opts = opts
        self.model = LinearModel(opts.version)
        self.served_rows = 0

    def answer(self, rows: npt.NDArray[np.float64], request_id: str) -> dict[str, Any]:
        probs = np.array([self.model.predict(row) for row in rows]).reshape(len(rows), len(LABELS))
        classes = probs.argmax(axis=1) if len(rows) else np.zeros(0, dtype=np.int64)
        if self.opts.constant_class is not None:
            classes = np.full(len(rows), self.opts.constant_class)
        self.served_rows += len(rows)
        n = len(rows)
        return {
            "model_name": self.opts.name,
            "model_version": self.opts.version,
            "id": request_id,
            "parameters": {"content_type": "np"},
            "outputs": [
                {"name": "predict", "shape": [n, 1], "datatype": "INT64",
                 "parameters": {"content_type": "np"}, "data": [int(c) for c in classes]},
                {"name": "predict_proba", "shape": [n, len(LABELS)], "datatype": "FP64",
                 "data": [round(float(p), 6) for p in probs.ravel()]},
            ],
        }  # fmt: skip

    async def infer(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            doc, tail = _header_and_tail(
                body, request.headers.get("Inference-Header-Content-Length")
            )
            rows = input_matrix(doc, tail)
        except BadRequest as exc:
            return web.json_response({"error": str(exc)}, status=400)
        payload = json.dumps(self.answer(rows, str(doc.get("id", "")))).encode()
        response = web.Response(body=payload, content_type="application/json")
        big = self.opts.gzip_min is not None and len(payload) >= self.opts.gzip_min
        if big and "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)
        return response

    async def model_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "name": self.opts.name,
                "versions": [self.opts.version],
                "platform": "example",
                "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}],
                "outputs": [
                    {"name": "predict", "datatype": "INT64", "shape": [-1, 1]},
                    {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
                ],
            }
        )

    async def ready(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response({"name": "example-v2", "version": "1", "extensions": []})


def build_app(opts: V2Options) -> web.Application:
    svc = V2Service(opts)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.router.add_post(base + "/infer", svc.infer)
        app.router.add_get(base, svc.model_metadata)
        app.router.add_get(base + "/ready", svc.ready)
    app.router.add_get("/v2/health/live", svc.ready)
    app.router.add_get("/v2/health/ready", svc.ready)
    app.router.add_get("/v2", svc.server_metadata)
    return app


async def start_v2_server(opts: V2Options) -> tuple[web.AppRunner, int]:
    """Serve on an ephemeral port of opts.host; returns the runner (the caller cleans
    it up) and the port."""
    runner = web.AppRunner(build_app(opts), access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((opts.host, 0))
        port: int = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    return runner, port


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Open Inference Protocol (V2) stand-in model server.")
    p.add_argument("--port", type=int, default=8103)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--version", default="v1", help="model version name; seeds the weights")
    p.add_argument("--constant-class", type=int, default=None, help="always answer this class")
    a = p.parse_args(argv)
    opts = V2Options(a.version, a.host, a.port, a.constant_class)
    web.run_app(
        build_app(opts),
        host=opts.host,
        port=opts.port,
        access_log=None,
        print=lambda _m: print(f"V2 model server {opts.version} on {opts.host}:{opts.port}"),
    )


if __name__ == "__main__":
    main()
