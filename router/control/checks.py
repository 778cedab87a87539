"""Checks of blue/green's idle colour before a switch: its health path, then its smoke requests.

Run from the process that got `routerctl switch` (router/control/bluegreen.py);
a switch goes ahead only when this returns no problem, or when forced.
"""

from __future__ import annotations

import ssl

import aiohttp

from router.config.spec import BackendSpec
from strategies.bluegreen import SmokeRequest

CHECK_TIMEOUT = 5.0  # longest wait for one health or smoke answer, seconds


def _ssl(backend: BackendSpec) -> ssl.SSLContext | bool:
    if backend.scheme != "https":
        return False
    if not backend.tls_verify:
        return False
    return ssl.create_default_context(cafile=backend.ca_file) if backend.ca_file else True


def _base(backend: BackendSpec) -> str:
    return f"{backend.scheme}://{backend.host}:{backend.port}{backend.base_path}"


async def _ask(
    session: aiohttp.ClientSession, backend: BackendSpec, req: SmokeRequest
) -> tuple[int | None, str]:
    """(status, "") or (None, why it got no answer)."""
    try:
        async with session.request(
            req.method,
            _base(backend) + req.path,
            data=req.body.encode() if req.body else None,
            headers=dict(req.headers),
            ssl=_ssl(backend),
        ) as resp:
            await resp.read()
            return resp.status, ""
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return None, str(exc) or type(exc).__name__


async def check_backend(backend: BackendSpec, smoke: tuple[SmokeRequest, ...]) -> list[str]:
    """Every reason the backend is not ready to take traffic ([] when it is)."""
    timeout = aiohttp.ClientTimeout(total=min(backend.timeout, CHECK_TIMEOUT))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        if backend.health:
            status, err = await _ask(session, backend, SmokeRequest("GET", backend.health))
            if status is None or not 200 <= status < 300:
                got = f"status {status}" if status is not None else err
                return [f"health check GET {backend.health} failed: {got}"]
        failures = []
        for req in smoke:
            status, err = await _ask(session, backend, req)
            if status != req.expect_status:
                got = f"status {status}" if status is not None else err
                failures.append(f"smoke {req.method} {req.path}: {got}, want {req.expect_status}")
        return failures
