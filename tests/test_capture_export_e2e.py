"""routerctl export: captured records joined with delayed labels, one line per item."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow.parquet as pq

from router.ops.cli import main as routerctl
from tests.support.echo import echo_backends
from tests.support.routerproc import RouterProcess
from tests.test_capture_e2e import TOKEN, until


def config(urls: dict[str, str], sink: Path) -> dict[str, Any]:
    drift = {"inputs": ["$.rows[*].x"], "outputs": ["$.echo.rows[*].x"], "reference": 10}
    return {
        "logging": {"access_sample": 0},
        "backends": {n: {"url": u} for n, u in urls.items()},
        "routes": [{
            "name": "batch", "match": {"path_prefix": "/"}, "drift": drift,
            "capture": {"sink": {"file": {"path": str(sink)}}},
            "strategy": {"shadow": {"primary": "a", "shadows": ["b"], "percent": 100}},
        }],
    }  # fmt: skip


async def test_export_joins_batches_per_item_with_their_labels(tmp_path: Path, capsys: Any) -> None:
    """A batch of three rows is three lines, each with its input, both arms' outputs and
    its label; an unlabelled request still exports, with label null."""
    sink = tmp_path / "cap.jsonl"
    async with echo_backends("a", "b") as b:
        router = RouterProcess(tmp_path, config({k: v.url for k, v in b.items()}, sink)).start()
        try:
            async with aiohttp.ClientSession() as session:
                ids = []
                for i in range(2):
                    body = {"rows": [{"x": 10 * i + j} for j in range(3)]}
                    async with session.post(router.url + "/predict", json=body) as r:
                        ids.append(r.headers["X-Request-Id"])
                await until(lambda: sink.exists() and len(sink.read_text().splitlines()) >= 4)
                label = {"request_id": ids[0], "labels": ["p", "q", "r"]}
                async with session.post(router.admin_url + "/v1/feedback", json=label,
                                        headers=TOKEN) as r:  # fmt: skip
                    assert r.status < 300, await r.text()
            await until(lambda: '"kind":"label"' in sink.read_text())
            out = tmp_path / "export.jsonl"
            args = ["--admin", router.admin_url, "--token", "test-token", "export", "batch"]
            code = await asyncio.to_thread(routerctl, [*args, "--since", "1h", "-o", str(out)])
            assert code == 0
            parquet = tmp_path / "export.parquet"
            code = await asyncio.to_thread(
                routerctl, [*args, "--format", "parquet", "--output", str(parquet)]
            )
            assert code == 0
            missing = await asyncio.to_thread(routerctl, [*args[:4], "export", "nope"])
        finally:
            router.stop()
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 6
    first = [r for r in rows if r["id"] == ids[0]]
    assert [r["item"] for r in first] == [0, 1, 2]
    assert [r["label"] for r in first] == ["p", "q", "r"]
    assert [r["inputs"] for r in first] == [{"$.rows[*].x": j} for j in range(3)]
    assert first[1]["outputs"] == {"$.echo.rows[*].x": 1}
    assert first[1]["shadows"] == {"b": {"$.echo.rows[*].x": 1}}
    assert all(r["label"] is None for r in rows if r["id"] == ids[1])
    assert pq.read_table(parquet).num_rows == 6
    assert missing == 1
    assert "unknown route 'nope'" in capsys.readouterr().err
