"""A stand-in for TensorFlow Serving's REST API, for demos and tests: an
iris-like classifier answering `:predict` calls the way TF Serving does.

    GET  /v1/models/NAME[/versions/V], /v1/models/NAME[/versions/V]/metadata
    POST /v1/models/NAME[/versions/V | /labels/L]:predict

Row format: `{"instances": [[f1..f4], ...]}` (or `[{"x": [...]}, ...]`) ->
`{"predictions": [{"classes": k, "scores": [p0, p1, p2]}, ...]}`. Columnar:
`{"inputs": [[...], ...]}` or `{"inputs": {"x": [[...]]}}` -> `{"outputs":
{"classes": [...], "scores": [[...]]}}`. One prediction per instance, from
examples/model_server.py's model; `--constant-class K` answers class K for
every instance. A bad request gets 400 `{"error": ...}`, as TF Serving does.

Run: `python -m examples.tfserving_server --port 8105 --version v1`.
"""

from __future__ import annotations

import argparse
import json
import socket
from dataclasses import dataclass

import numpy as np
from aiohttp import web

from examples.model_server import LinearModel


@dataclass(frozen=True, slots=True)
class TfOptions:
    version: str = "v1"
    host: str = "127.0.0.1"
    port: int = 8105
    constant_class: int | None = None


class BadRequest(ValueError):
    """Maps to 400 {"error": ...}."""


def _rows(value: object) -> list[list[float]]:
    """Instances as float rows: each a list of numbers, or {"x": [...]}."""
    if not isinstance(value, list) or not value:
        raise BadRequest("instances must be a non-empty list")
    rows = [r.get("x") if isinstance(r, dict) else r for r in value]
    try:
        return [[float(x) for x in row] for row in rows]  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"each instance must be a list of numbers: {exc}") from None


def parse_request(doc: object) -> tuple[list[list[float]], bool]:
    """(rows, columnar?) of a predict request."""
    if not isinstance(doc, dict):
        raise BadRequest("request must be a JSON object")
    if "instances" in doc:
        return _rows(doc["instances"]), False
    if "inputs" in doc:
        inputs = doc["inputs"]
        return _rows(inputs.get("x") if isinstance(inputs, dict) else inputs), True
    raise BadRequest("missing 'instances' or 'inputs' key")


class TfService:
    def __init__(self, opts: TfOptions) -> None:
        self.opts = opts
        self.model = LinearModel(opts.version)

    def predict_rows(self, rows: list[list[float]]) -> tuple[list[int], list[list[float]]]:
        probs = [self.model.predict(np.asarray(r, dtype=np.float64)) for r in rows]
        classes = [int(p.argmax()) for p in probs]
        if self.opts.constant_class is not None:
            classes = [self.opts.constant_class] * len(rows)
        return classes, [[round(float(x), 6) for x in p] for p in probs]

    async def predict(self, request: web.Request) -> web.Response:
        try:
            rows, columnar = parse_request(json.loads(await request.read()))
        except (BadRequest, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        classes, scores = self.predict_rows(rows)
        if columnar:
            return web.json_response({"outputs": {"classes": classes, "scores": scores}})
        pairs = zip(classes, scores, strict=True)
        return web.json_response({"predictions": [{"classes": c, "scores": s} for c, s in pairs]})

    async def status(self, request: web.Request) -> web.Response:
        state = {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK"}}
        return web.json_response({"model_version_status": [state]})

    async def metadata(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return web.json_response({"model_spec": {"name": name, "version": "1"}, "metadata": {}})


def build_app(opts: TfOptions) -> web.Application:
    svc = TfService(opts)
    app = web.Application()
    name = "{name:[^/:]+}"
    for base in (f"/v1/models/{name}", f"/v1/models/{name}/versions/{{v:[^/:]+}}"):
        app.router.add_post(base + ":predict", svc.predict)
        app.router.add_get(base, svc.status)
        app.router.add_get(base + "/metadata", svc.metadata)
    app.router.add_post(f"/v1/models/{name}/labels/{{label:[^/:]+}}:predict", svc.predict)
    return app


async def start_tfserving_server(opts: TfOptions) -> tuple[web.AppRunner, int]:
    """Serve on an ephemeral port; returns the runner (the caller cleans it up) and port."""
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
    p = argparse.ArgumentParser(description="TF Serving REST stand-in model server.")
    p.add_argument("--port", type=int, default=8105)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--version", default="v1", help="model version name; seeds the weights")
    p.add_argument("--constant-class", type=int, default=None, help="always answer this class")
    a = p.parse_args(argv)
    opts = TfOptions(a.version, a.host, a.port, a.constant_class)
    web.run_app(
        build_app(opts),
        host=opts.host,
        port=opts.port,
        access_log=None,
        print=lambda _m: print(f"TF Serving stand-in {opts.version} on {opts.host}:{opts.port}"),
    )


if __name__ == "__main__":
    main()
