"""Admin access by role: viewer reads, operator changes, nobody without a token reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from router.config.spec import AdminSpec, TokenSpec
from router.dataplane.metrics import Metrics
from router.ops.admin import build_admin_app
from router.ops.auth import Access, TokenError, load_tokens
from router.runtime import Runtime
from tests.test_admin import Calls, make_runtime

VIEWER = {"Authorization": "Bearer view-1"}
OPERATOR = {"Authorization": "Bearer op-1"}
READS = ("/v1/status", "/v1/routes/iris", "/v1/routes/iris/history", "/v1/dashboard",
         "/v1/routes/iris/shadow", "/v1/routes/iris/diffs")  # fmt: skip
OPEN = ("/healthz", "/readyz", "/metrics", "/dashboard")


@pytest.fixture
async def rig(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Any]:
    (tmp_path / "viewer").write_text("view-1\n")
    monkeypatch.setenv("OPS_TOKEN", "op-1")
    monkeypatch.delenv("ROUTER_ADMIN_TOKEN", raising=False)
    spec = AdminSpec(tokens=(
        TokenSpec("dash", "viewer", file=str(tmp_path / "viewer")),
        TokenSpec("alice", "operator", env="OPS_TOKEN"),
    ))  # fmt: skip
    runtime: Runtime = make_runtime()
    calls = Calls()

    async def history(route: str, n: int) -> list[dict[str, Any]]:
        return []

    app = build_admin_app(
        runtime, Metrics(), Access(load_tokens(spec)), calls.actions(), history=history
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        yield c, calls


async def test_without_a_token_only_health_metrics_and_the_page_answer(rig: Any) -> None:
    """No token: 401 on every read and change; health, readiness, metrics and the page shell 200."""
    client, calls = rig
    for path in OPEN:
        assert (await client.get(path)).status == 200, path
    for path in READS:
        assert (await client.get(path)).status == 401, path
    assert (await client.post("/v1/routes/iris/pause")).status == 401
    wrong = {"Authorization": "Bearer op-2"}
    assert (await client.get("/v1/status", headers=wrong)).status == 401
    assert calls.seen == []


async def test_a_viewer_reads_and_cannot_change(rig: Any) -> None:
    """A viewer token: every read 200, every change 403 naming the role; the action never runs."""
    client, calls = rig
    for path in READS:
        resp = await client.get(path, headers=VIEWER)
        assert resp.status in (200, 501), (path, resp.status)  # 501: no shadow figures here
        assert resp.status != 501 or "shadow" in path or "diffs" in path
    for path in ("/v1/routes/iris/pause", "/v1/config/reload"):
        resp = await client.post(path, headers=VIEWER)
        assert resp.status == 403
        assert "viewer" in (await resp.json())["error"]
    assert calls.seen == []


async def test_an_operator_changes_and_history_names_its_label(rig: Any) -> None:
    """The operator's change runs, with the token's label in the actor history writes."""
    client, calls = rig
    resp = await client.post("/v1/routes/iris/pause", json={"actor": "routerctl"}, headers=OPERATOR)
    assert resp.status == 200
    assert calls.seen == [("iris", {"actor": "routerctl by alice"})]
    resp = await client.get("/v1/status", headers=OPERATOR)
    assert resp.status == 200


def test_a_token_that_cannot_be_read_stops_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                    ) -> None:  # fmt: skip
    """An empty env variable or file is an error naming the token, never an open API."""
    monkeypatch.delenv("ROUTER_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("EMPTY", " ")
    with pytest.raises(TokenError, match=r"admin.tokens\[0\] \(ci\): environment variable EMPTY"):
        load_tokens(AdminSpec(tokens=(TokenSpec("ci", "operator", env="EMPTY"),)))
    (tmp_path / "t").write_text("\n")
    with pytest.raises(TokenError, match="is empty"):
        load_tokens(AdminSpec(tokens=(TokenSpec("v", "viewer", file=str(tmp_path / "t")),)))


def test_the_single_admin_token_is_still_an_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    """ROUTER_ADMIN_TOKEN keeps working, as an operator token labelled admin."""
    monkeypatch.setenv("ROUTER_ADMIN_TOKEN", "old")
    tokens = load_tokens(AdminSpec())
    assert [(t.label, t.role, t.secret) for t in tokens] == [("admin", "operator", b"old")]
