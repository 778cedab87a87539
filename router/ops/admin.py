"""The admin HTTP API (aiohttp), default 127.0.0.1:9901.

Theory of operation
-------------------
Who may do what is router/ops/auth.py: `/healthz`, `/readyz`, `/metrics` and the
dashboard's page answer anyone; every other read needs a viewer (or operator)
token, every change an operator token. The endpoints: `/healthz` (the process
is alive), `/readyz` (degraded while the state store is unreachable: the data
plane keeps serving its last snapshot; stopping after SIGTERM; the kubelet's
own is router/ops/probes.py), `/v1/status` and `/v1/routes/NAME` (what every route does now),
`/v1/routes/NAME/history` and `/metrics` (Prometheus text); `/dashboard`, a
page of live charts, polling `/v1/dashboard` (router/ops/dashboard.py); a shadow route's
comparison figures at `/v1/routes/NAME/shadow` and its sampled disagreements
at `/v1/routes/NAME/diffs?n=20` (given a `ShadowFigures`, router/shadow/mirror.py). Changes are
`POST /v1/routes/NAME/ACTION` and `POST /v1/config/reload`; every POST needs
an operator's `Authorization: Bearer <token>`, and the history of a change
names the token's label. With no token configured everything but health and
metrics is refused: an admin port that anyone on the host could read or
change is never the default.

Features bring their own routes as `AdminExtension`s: drift
(`GET /v1/routes/NAME/drift`, `POST /v1/routes/NAME/drift/reset`, see
router/drift/watch.py) and delayed labels (`POST /v1/feedback` with
`{"request_id": ..., "label": ...}`, `value` for regression, or a list of them,
token required; `GET /v1/routes/NAME/feedback` for accuracy per backend, see
router/drift/labels.py).

The API does not know what an action does: `actions` maps a word (promote,
pause, rollback, ...) to a coroutine `(route, body) -> (status, json)` given by
whoever owns rollouts, so a new verb is one dict entry. Every answer, errors
included, is JSON; request bodies are never logged.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, Protocol

import structlog
from aiohttp import web

import router
from router.config.spec import AdminSpec
from router.core.rollout import Rollout
from router.dataplane.metrics import Metrics
from router.dataplane.routing import CompiledRoute
from router.native import data_plane
from router.ops.auth import TOKEN_ENV, Access, Token, actor_of, legacy_token
from router.ops.dashboard import (
    Dashboard,
    find_drift,
    find_streams,
    freshen_reasons,
    install_dashboard,
)
from router.ops.exposition import negotiate
from router.ops.roles import route_weights as route_weights  # the admin API's, re-exported
from router.ops.telemetry import Telemetry
from router.runtime import Runtime
from router.state.base import StoreUnavailable

log = structlog.get_logger("router.ops.admin")

Action = Callable[[str, dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]
ExtraStatus = Callable[[], Awaitable[dict[str, Any]]]
Reload = Callable[[], bool | Awaitable[bool]]
History = Callable[[str, int], Awaitable[list[dict[str, Any]]]]


class ShadowFigures(Protocol):
    """Shadow comparison figures of a route (router.shadow.mirror.Mirrors)."""

    async def summary(self, route: str) -> dict[str, Any]: ...

    async def diffs(self, route: str, n: int = 20) -> list[dict[str, Any]]: ...


Refusal = Callable[[web.Request], "web.Response | None"]


class AdminExtension(Protocol):
    """A feature that brings its own admin routes and Prometheus lines (drift, feedback).

    `install` adds routes to the app; a handler that changes anything calls
    `refusal(request)` first and returns its answer when it is not None."""

    def install(self, app: web.Application, refusal: Refusal) -> None: ...

    def metric_lines(self) -> list[str]: ...


__all__ = ["TOKEN_ENV", "build_admin_app", "load_token", "start_admin"]
# Fixed for the life of the process: what got imported is what runs.
DATA_PLANE = data_plane()


def load_token(spec: AdminSpec) -> str | None:
    """The operator token of old: ROUTER_ADMIN_TOKEN, else token_file (router/ops/auth.py)."""
    return legacy_token(spec)


def access_of(token: str | Access | None) -> Access:
    """A single token (as before roles) is an operator token labelled `admin`."""
    if isinstance(token, Access):
        return token
    return Access([Token("admin", "operator", token.encode())] if token else [])


def route_entry(route: CompiledRoute, live: Rollout | None) -> dict[str, Any]:
    """One route as /v1/status shows it."""
    match = route.spec.match
    return {
        "name": route.name,
        "match": {"path_prefix": match.path_prefix, "host": match.host},
        "strategy": route.spec.strategy_kind,
        "protocol": route.spec.protocol,
        "backends": list(route.strategy.backends()),
        "weights": route_weights(route, live),
        "rollout": asdict(live) if live is not None else None,
    }


def _json(status: int, body: Mapping[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return _json(status, {"error": message, "message": message, **extra})


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error as JSON: unknown paths, wrong methods and unexpected failures."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, f"{exc.reason}: {request.method} {request.path}")
    except StoreUnavailable:
        return _error(503, "state store unreachable: try again when it is back")
    except Exception:
        log.exception("admin_handler_failed", method=request.method, path=request.path)
        return _error(500, "internal error; see the router's log")


class _Admin:
    """The handlers, holding what they read; one instance per app."""

    def __init__(
        self,
        runtime: Runtime,
        metrics: Metrics,
        token: str | Access | None,
        actions: Mapping[str, Action],
        extra_status: ExtraStatus | None,
        reload: Reload | None,
        history: History | None,
        shadow: ShadowFigures | None = None,
        extensions: Sequence[AdminExtension] = (),
        page: Callable[[], str] | None = None,
    ) -> None:
        self.extensions = tuple(extensions)
        # the /metrics text: the router's whole page (router/ops/telemetry.py), or for an
        # admin app built alone (tests) one of these parts and the extensions' lines
        self.page = page or Telemetry(runtime, metrics, extensions=self.extensions).page
        self.runtime = runtime
        self.metrics = metrics
        self.access = access_of(token)
        self.actions = dict(actions)
        self.extra_status = extra_status
        self.reload = reload
        self.history = history
        self.shadow = shadow

    def refusal(self, request: web.Request) -> web.Response | None:
        """None when the request carries an operator token, else the answer refusing it."""
        return self.access.refusal(request, change=True)

    async def healthz(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.runtime.stopping:
            return _json(503, {"status": "stopping"})
        reasons = []
        if not self.runtime.store_ok:
            reasons.append("state store unreachable: serving last known state")
        if restoring := self.runtime.store_notes().get("restoring"):
            routes = ", ".join(restoring)
            reasons.append(f"the state store lost {routes}: writing back this replica's copy")
        if not reasons:
            return _json(200, {"status": "ready"})
        return _json(503, {"status": "degraded", "reasons": reasons})

    async def status(self, request: web.Request) -> web.Response:
        rt = self.runtime
        body: dict[str, Any] = {
            "version": router.__version__,
            "data_plane": DATA_PLANE,
            "pid": os.getpid(),
            "uptime": round(time.time() - rt.started_at, 3),
            "config": {
                "path": rt.config_path,
                "hash": rt.config.source_hash,
                "loaded_at": rt.loaded_at,
                "last_reload_error": rt.last_reload_error,
                "last_reload_error_at": rt.last_reload_error_at,
            },
            "store": {"kind": rt.store_kind, "ok": rt.store_ok, **rt.store_notes()},
            "routes": [route_entry(r, rt.live.get(r.name)) for r in self._routes()],
        }
        if self.extra_status is not None:
            body.update(await self.extra_status())
        freshen_reasons(body)
        await self._compare_problems(body["routes"])
        return _json(200, body)

    async def _compare_problems(self, routes: list[dict[str, Any]]) -> None:
        """Next to each comparing route: why a compared field cannot work, in words
        (router/shadow/hints.py); nothing when the store does not answer."""
        if self.shadow is None:
            return
        for entry in routes:
            if entry["strategy"] not in ("shadow", "canary"):
                continue
            with contextlib.suppress(StoreUnavailable):
                summary = await self.shadow.summary(entry["name"])
                pairs = summary.get("shadows", {}).values()
                entry["compare_problems"] = [p for pair in pairs for p in pair.get("problems", [])]

    def _routes(self) -> list[CompiledRoute]:
        """Routes in config order (`by_name` keeps it; `routes` is in match order)."""
        return list(self.runtime.table.by_name.values())

    def _route(self, request: web.Request) -> CompiledRoute | None:
        return self.runtime.table.by_name.get(request.match_info["name"])

    async def route(self, request: web.Request) -> web.Response:
        route = self._route(request)
        if route is None:
            return _error(404, f"unknown route {request.match_info['name']!r}")
        return _json(200, route_entry(route, self.runtime.live.get(route.name)))

    async def route_history(self, request: web.Request) -> web.Response:
        route = self._route(request)
        if route is None:
            return _error(404, f"unknown route {request.match_info['name']!r}")
        if self.history is None:
            return _error(501, "history is not available in this router")
        try:
            count = max(1, min(int(request.query.get("n", "50")), 10_000))
        except ValueError:
            return _error(400, "n must be an integer")
        entries = await self.history(route.name, count)
        return _json(200, {"route": route.name, "entries": entries})

    async def route_shadow(self, request: web.Request) -> web.Response:
        route = self._route(request)
        if route is None:
            return _error(404, f"unknown route {request.match_info['name']!r}")
        if self.shadow is None:
            return _error(501, "shadow figures are not available in this router")
        return _json(200, await self.shadow.summary(route.name))

    async def route_diffs(self, request: web.Request) -> web.Response:
        route = self._route(request)
        if route is None:
            return _error(404, f"unknown route {request.match_info['name']!r}")
        if self.shadow is None:
            return _error(501, "shadow figures are not available in this router")
        try:
            count = max(1, min(int(request.query.get("n", "20")), 1000))
        except ValueError:
            return _error(400, "n must be an integer")
        diffs = await self.shadow.diffs(route.name, count)
        return _json(200, {"route": route.name, "diffs": diffs})

    async def metrics_text(self, request: web.Request) -> web.Response:
        """Prometheus text, or OpenMetrics when the scraper's Accept prefers it."""
        body, content_type = negotiate(self.page(), request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def action(self, request: web.Request) -> web.Response:
        if (refused := self.refusal(request)) is not None:
            return refused
        route, word = self._route(request), request.match_info["action"]
        if route is None:
            return _error(404, f"unknown route {request.match_info['name']!r}")
        handler = self.actions.get(word)
        if handler is None:
            known = sorted(self.actions)
            return _error(404, f"unknown action {word!r}; known: {', '.join(known)}", known=known)
        body = await _json_body(request)
        if body is None:
            return _error(400, "the body must be a JSON object (or empty)")
        body["actor"] = actor_of(request, body.get("actor"))  # history names the token's label
        status, result = await handler(route.name, body)
        log.info("admin_action", route=route.name, action=word, status=status, by=body["actor"])
        return _json(status, result)

    async def config_reload(self, request: web.Request) -> web.Response:
        if (refused := self.refusal(request)) is not None:
            return refused
        if self.reload is None:
            return _error(501, "config reload is not available in this router")
        outcome = self.reload()
        changed = await outcome if inspect.isawaitable(outcome) else outcome
        rt = self.runtime
        if rt.last_reload_error:
            return _error(422, f"config refused, old config keeps serving: {rt.last_reload_error}")
        message = "config reloaded" if changed else "config unchanged"
        return _json(
            200, {"message": message, "changed": bool(changed), "hash": rt.config.source_hash}
        )


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    """The request's JSON object, {} when empty, None when it is not an object."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def build_admin_app(
    runtime: Runtime,
    metrics: Metrics,
    token: str | Access | None,
    actions: Mapping[str, Action] | None = None,
    extra_status: ExtraStatus | None = None,
    reload: Reload | None = None,
    history: History | None = None,
    shadow: ShadowFigures | None = None,
    extensions: Sequence[AdminExtension] = (),
    page: Callable[[], str] | None = None,
) -> web.Application:
    """The admin application; serve it with `start_admin` (or any aiohttp runner).
    `page` renders /metrics (router/ops/telemetry.py `Telemetry.page`)."""
    admin = _Admin(
        runtime,
        metrics,
        token,
        actions or {},
        extra_status,
        reload,
        history,
        shadow,
        extensions,
        page,
    )
    app = web.Application(
        middlewares=[_json_errors, admin.access.middleware], client_max_size=1024 * 1024
    )
    app.router.add_get("/healthz", admin.healthz)
    app.router.add_get("/readyz", admin.readyz)
    app.router.add_get("/v1/status", admin.status)
    app.router.add_get("/v1/routes/{name}", admin.route)
    app.router.add_get("/v1/routes/{name}/history", admin.route_history)
    app.router.add_get("/v1/routes/{name}/shadow", admin.route_shadow)
    app.router.add_get("/v1/routes/{name}/diffs", admin.route_diffs)
    app.router.add_get("/metrics", admin.metrics_text)
    app.router.add_post("/v1/routes/{name}/{action}", admin.action)
    app.router.add_post("/v1/config/reload", admin.config_reload)
    for extension in extensions:
        extension.install(app, admin.refusal)
    dashboard = Dashboard(
        runtime,
        metrics,
        shadow,
        find_drift(extensions),
        weights=route_weights,
        analysis=extra_status,
        streams=find_streams(extensions),
    )
    install_dashboard(app, dashboard)  # GET /dashboard and GET /v1/dashboard, read-only
    return app


async def start_admin(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve the admin app on host:port (0: any free port); returns the runner and the port."""
    runner = web.AppRunner(app, access_log=None)  # no access log: nothing about bodies leaks
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, int(runner.addresses[0][1])
