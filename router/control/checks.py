"""Checks of blue/green's idle colour before a switch: its health path, then its smoke requests.

Run from the process that got `routerctl switch` (router/control/bluegreen.py);
a switch goes ahead only when this returns no problem, or when forced. The
requests go through the same awaitable client as the shadows' copies
(router/shadow/client.py) on a pool of their own: the backend's TLS settings,
timeouts and framing are the data plane's, a check never takes a connection
the data plane could be using, and each carries `X-Shadow-Request: 1` like the
copies do: the backend can tell it from a user's request.
"""

from __future__ import annotations

from dataclasses import replace

from router.config.spec import BackendSpec
from router.core.errors import UpstreamError
from router.dataplane.http1 import new_request_id
from router.dataplane.upstream import UpstreamPool
from router.shadow.client import fetch, request_bytes
from strategies.bluegreen import SmokeRequest

CHECK_TIMEOUT = 5.0  # longest wait for one health or smoke answer, seconds
ANSWER_LIMIT = 64 * 1024  # bytes of an answer kept (its status is what is checked)


async def _ask(pool: UpstreamPool, req: SmokeRequest) -> tuple[int | None, str]:
    """(status, "") or (None, why it got no answer)."""
    headers = [(name.lower().encode(), value.encode()) for name, value in req.headers]
    rid = (b"x-request-id", new_request_id().encode())
    method = req.method.upper().encode()
    data = request_bytes(pool, method, req.path.encode(), headers, req.body.encode(), rid)
    try:
        status, _ = await fetch(pool, data, head_only=method == b"HEAD", limit=ANSWER_LIMIT)
    except (UpstreamError, TimeoutError, OSError) as exc:
        return None, str(exc) or type(exc).__name__
    return status, ""


async def check_backend(backend: BackendSpec, smoke: tuple[SmokeRequest, ...]) -> list[str]:
    """Every reason the backend is not ready to take traffic ([] when it is)."""
    pool = UpstreamPool(replace(backend, timeout=min(backend.timeout, CHECK_TIMEOUT)))
    try:
        if backend.health:
            status, err = await _ask(pool, SmokeRequest("GET", backend.health))
            if status is None or not 200 <= status < 300:
                got = f"status {status}" if status is not None else err
                return [f"health check GET {backend.health} failed: {got}"]
        failures = []
        for req in smoke:
            status, err = await _ask(pool, req)
            if status != req.expect_status:
                got = f"status {status}" if status is not None else err
                failures.append(f"smoke {req.method} {req.path}: {got}, want {req.expect_status}")
        return failures
    finally:
        await pool.close()
