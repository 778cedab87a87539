"""What must never leave the router: an e-mail, a credential header, a redacted JSON path.

A real router process, two captured shadow routes (one to a file sink, one to a
CloudEvents receiver), disagreement samples on, the access log and the event log
in files; every output is read back and searched for the secrets.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.cereceiver import receiver
from tests.support.echo import echo_backends
from tests.support.routerproc import RouterProcess
from tests.test_capture_e2e import TOKEN, until

EMAIL = "jo.secret@example.com"
BEARER = "SECRET-TOKEN-XYZ"
COOKIE = "COOKIE-XYZ-123"
API_KEY = "APIKEY-XYZ-123"
SSN = "AB-77-XK-hidden"  # no pattern matches it: only the path takes it out
PHONE = "+1 415 555 0199"
SECRETS = (EMAIL, BEARER, COOKIE, API_KEY, SSN, "555 0199")
BODY = {"user": {"email": EMAIL, "ssn": SSN, "name": "Jo"}, "note": f"call {PHONE}", "x": [1, 2]}
HEADERS = {"Authorization": f"Bearer {BEARER}", "Cookie": f"sid={COOKIE}", "X-Api-Key": API_KEY}
REDACT = {"remove": ["$.user.ssn", "$.echo.user.ssn"], "hash": ["$.user.name"]}


def route(name: str, sink: dict[str, Any]) -> dict[str, Any]:
    compare = [{"field": "$.backend", "kind": "label"}]
    samples = {"store_request_body": True, "max": 50}
    return {
        "name": name,
        "match": {"path_prefix": f"/{name}"},
        "capture": {"sink": sink},
        "redact": REDACT,
        "strategy": {"shadow": {"primary": "a", "shadows": ["b"], "percent": 100,
                                "compare": compare, "sample_disagreements": samples}},
    }  # fmt: skip


async def test_no_secret_reaches_a_sink_a_sample_or_a_log(tmp_path: Path) -> None:
    """Records and samples keep the payload's shape, never its secrets; logs have none."""
    sink = tmp_path / "cap.jsonl"
    access = tmp_path / "access.log"
    async with echo_backends("a", "b") as b, receiver() as ce:
        config = {
            "logging": {"level": "debug", "access_file": str(access)},
            "backends": {n: {"url": v.url} for n, v in b.items()},
            "routes": [route("f", {"file": {"path": str(sink)}}),
                       route("h", {"http": {"url": ce.url}})],
        }  # fmt: skip
        router = RouterProcess(tmp_path, config).start()
        try:
            async with aiohttp.ClientSession() as session:
                for path in ("/f/predict?mail=" + EMAIL, "/h/predict"):
                    for _ in range(5):
                        async with session.post(router.url + path, json=BODY, headers=HEADERS) as r:
                            assert r.status == 200
            await until(lambda: sink.exists() and len(sink.read_text().splitlines()) >= 10)
            await until(lambda: len(ce.events) >= 15)  # request + response + shadow, x5
            outputs = [sink.read_text(), *(json.dumps(h) + b.decode() for h, b in ce.events)]
            async with aiohttp.ClientSession(headers=TOKEN) as session:
                for name in ("f", "h"):
                    for what in ("shadow", "diffs?n=50"):
                        await _wait_samples(session, router.admin_url, name)
                        async with session.get(f"{router.admin_url}/v1/routes/{name}/{what}") as r:
                            outputs.append(await r.text())
        finally:
            router.stop()
    outputs += [router.log(), access.read_text()]
    found = [(s, i) for i, text in enumerate(outputs) for s in SECRETS if s in text]
    assert found == []
    record = json.loads(sink.read_text().splitlines()[0])
    assert record["request"]["json"]["user"]["email"] == "[email]"
    assert "ssn" not in record["request"]["json"]["user"]
    assert set(record["request"]["json"]["user"]["name"]) == {"redacted", "sha256"}
    assert record["request"]["json"]["note"] == "call [phone]"
    assert "authorization" not in record["request"]["headers"]
    assert record["request"]["headers"]["content-type"].startswith("application/json")
    assert "[email]" in outputs[-3] or "[email]" in outputs[-4]  # samples kept, redacted


async def _wait_samples(session: aiohttp.ClientSession, admin: str, name: str) -> None:
    for _ in range(200):
        async with session.get(f"{admin}/v1/routes/{name}/diffs?n=50") as r:
            if len((await r.json())["diffs"]) >= 5:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no samples for {name}")
