"""Delayed labels across two router replicas sharing one Redis, end to end.

Replica A serves every request and so is the only one that remembers which
backend answered what; every label is posted to replica B's admin API. The
labels travel through the store (router/drift/labels.py): B shares each batch, A
finds the request ids in its memory and counts the outcomes in per-route
counter hashes, which both replicas read. The right / wrong labels follow a
fixed rule per backend, so the expected counts are exact: a label is matched
once, by the replica that served the request, and never guessed. Labels for
request ids nobody served are accepted and show up only as received minus
matched; a label sent again (to either replica) finds nothing left to match.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from examples.model_server import LABELS, ModelOptions, start_model_server
from tests.support.routerproc import RouterProcess

TOKEN = {"Authorization": "Bearer test-token"}
N = 200
UNKNOWN = 25  # labels for request ids no replica served
BATCH = 50  # labels per POST
DEADLINE = 5.0  # seconds: drift pass 0.1 s + feedback poll 0.5 s, with room to spare
# Known share of right labels per backend; different, so a backend mix-up shows.
RIGHT_EVERY = {"stable": (4, 5), "canary": (1, 2)}  # (right, out of) by position


class Served(NamedTuple):
    rid: str
    backend: str
    prediction: str


@pytest.fixture
async def models() -> AsyncIterator[dict[str, str]]:
    """Two versions of the example model on loopback: backend name -> url."""
    runners: list[web.AppRunner] = []
    urls: dict[str, str] = {}
    try:
        for name, version in (("stable", "v1"), ("canary", "v2")):
            runner, port = await start_model_server(ModelOptions(version=version, port=0))
            runners.append(runner)
            urls[name] = f"http://127.0.0.1:{port}"
        yield urls
    finally:
        for runner in runners:
            await runner.cleanup()


def replica_config(models: dict[str, str], redis_url: str) -> dict[str, Any]:
    """A 50/50 split whose answers' `$.label` is remembered for delayed labels."""
    return {
        "logging": {"access_sample": 0},
        "state": {"url": redis_url},
        "backends": {name: {"url": url} for name, url in models.items()},
        "routes": [
            {
                "name": "iris",
                "match": {"path_prefix": "/"},
                # reference > N: the output stream keeps collecting, so its `have`
                # tells how many answers replica A has remembered
                "drift": {"outputs": ["$.label"], "reference": 10_000},
                "strategy": {"split": {"weights": {"stable": 50, "canary": 50}}},
            }
        ],
    }


async def serve(session: aiohttp.ClientSession, url: str, n: int) -> list[Served]:
    """n predictions through one replica: request id, backend and label of each."""
    rows = np.random.default_rng(7).normal(size=(n, 4))

    async def one(row: np.ndarray[Any, Any]) -> Served:
        async with session.post(url + "/predict", json={"features": row.tolist()}) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
            return Served(
                resp.headers["X-Request-Id"], resp.headers["X-Router-Backend"], body["label"]
            )

    served: list[Served] = []
    for start in range(0, n, BATCH):
        served += await asyncio.gather(*(one(r) for r in rows[start : start + BATCH]))
    return served


def labels_for(served: Sequence[Served]) -> tuple[list[dict[str, str]], dict[str, tuple[int, int]]]:
    """Labels by the RIGHT_EVERY rule and the expected (n, correct) per backend."""
    labels: list[dict[str, str]] = []
    expected: dict[str, tuple[int, int]] = {}
    for s in served:
        n, correct = expected.get(s.backend, (0, 0))
        right, out_of = RIGHT_EVERY[s.backend]
        is_right = n % out_of < right
        wrong = LABELS[(LABELS.index(s.prediction) + 1) % len(LABELS)]
        labels.append({"request_id": s.rid, "label": s.prediction if is_right else wrong})
        expected[s.backend] = (n + 1, correct + int(is_right))
    return labels, expected


async def remembered(session: aiohttp.ClientSession, replica: RouterProcess) -> int:
    """Answers the replica's drift pass has taken in (its output stream's collection)."""
    async with session.get(replica.admin_url + "/v1/routes/iris/drift") as resp:
        body = await resp.json()
    [outputs] = [s for s in body["streams"] if s["stream"] == "outputs"]
    have: int = outputs["reference"]["have"]
    return have


async def wait_remembered(session: aiohttp.ClientSession, replica: RouterProcess, n: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while (have := await remembered(session, replica)) < n:
        assert time.monotonic() < deadline, f"replica remembered {have} of {n} answers"
        await asyncio.sleep(0.05)


async def post_labels(
    session: aiohttp.ClientSession,
    replica: RouterProcess,
    labels: Sequence[dict[str, str]],
    size: int = BATCH,
) -> dict[str, int]:
    """POST in batches of `size`; every label must be accepted, none rejected. Returns
    the outcomes the router answered, summed over the batches."""
    total: dict[str, int] = {}
    for start in range(0, len(labels), size):
        batch = list(labels[start : start + size])
        url = replica.admin_url + "/v1/feedback"
        async with session.post(url, json=batch, headers=TOKEN) as resp:
            body = await resp.json()
            assert resp.status == 202, body
        assert (body["accepted"], body["rejected"]) == (len(batch), []), body
        outcomes = {k: body[k] for k in ("matched", "duplicate", "mismatched", "unknown")}
        assert sum(outcomes.values()) == len(batch), body
        for k, n in outcomes.items():
            total[k] = total.get(k, 0) + n
    return total


async def report_when(
    session: aiohttp.ClientSession, replica: RouterProcess, matched: int, received: int
) -> dict[str, Any]:
    """The route's feedback report once the store holds every outcome (or at the deadline)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        async with session.get(replica.admin_url + "/v1/routes/iris/feedback") as resp:
            body: dict[str, Any] = await resp.json()
        done = body["matched"] >= matched and body["received_all_routes"] >= received
        if done or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.05)


async def matched_here(session: aiohttp.ClientSession, replica: RouterProcess) -> float:
    """router_feedback_matched_total of one replica (labels it matched itself)."""
    async with session.get(replica.admin_url + "/metrics") as resp:
        text = await resp.text()
    [line] = [ln for ln in text.splitlines() if ln.startswith("router_feedback_matched_total")]
    return float(line.split()[-1])


def unknown_labels(count: int) -> list[dict[str, str]]:
    return [{"request_id": f"never-served-{i}", "label": LABELS[i % 3]} for i in range(count)]


@pytest.fixture
async def replicas(
    tmp_path: Path, models: dict[str, str], redis_url: str
) -> AsyncIterator[tuple[RouterProcess, RouterProcess]]:
    """Two router processes on the same config and the same (emptied) Redis."""
    config = replica_config(models, redis_url)
    a, b = (RouterProcess(tmp_path, config, name=n) for n in ("a", "b"))
    try:
        await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
        yield a, b
    finally:
        a.stop()
        b.stop()


def check_backends(report: dict[str, Any], expected: dict[str, tuple[int, int]]) -> None:
    for backend, (n, correct) in expected.items():
        figures = report["backends"][backend]
        assert (figures["n"], figures["correct"]) == (n, correct), (backend, figures)
        assert figures["accuracy"] == pytest.approx(correct / n)


async def test_labels_posted_to_another_replica_count_exactly_once(
    replicas: tuple[RouterProcess, RouterProcess],
) -> None:
    """200 requests served by A, labelled through B: both report the exact right share per
    backend; labels for unknown request ids are accepted and left unmatched."""
    a, b = replicas
    async with aiohttp.ClientSession(headers=TOKEN) as session:  # admin reads need it
        served = await serve(session, a.url, N)
        await wait_remembered(session, a, N)
        labels, expected = labels_for(served)
        # unknown ids both mixed into a batch of known ones and in batches of their own
        unknown = unknown_labels(UNKNOWN + BATCH)
        one = await post_labels(session, b, labels[:BATCH] + unknown[:UNKNOWN])
        two = await post_labels(session, b, labels[BATCH:] + unknown[UNKNOWN:])
        received = N + UNKNOWN + BATCH
        reports = [await report_when(session, r, N, received) for r in (a, b)]
        counted = [await matched_here(session, r) for r in (a, b)]
    assert set(expected) == {"stable", "canary"}, expected  # the split reached both
    # the POST says what became of its labels: A matched them, nobody knew the others
    assert one["matched"] + two["matched"] == N, (one, two)
    assert one["unknown"] + two["unknown"] == UNKNOWN + BATCH, (one, two)
    for report in reports:
        assert report["matched"] == N, report
        assert report["received_all_routes"] == received, report  # unmatched, yet received
        check_backends(report, expected)
    assert reports[0]["backends"] == reports[1]["backends"]
    assert counted == [N, 0]  # the serving replica matched them all, the other none


async def test_a_label_sent_again_to_the_serving_replica_is_not_counted_twice(
    replicas: tuple[RouterProcess, RouterProcess],
) -> None:
    """Labels already matched through B, re-posted to A, change no figure."""
    a, b = replicas
    n = 2 * BATCH
    async with aiohttp.ClientSession(headers=TOKEN) as session:  # admin reads need it
        served = await serve(session, a.url, n + 1)
        await wait_remembered(session, a, n + 1)
        labels, _ = labels_for(served[:n])
        late, expected = labels_for(served)  # what the counts must be with the last one
        await post_labels(session, b, labels)
        await report_when(session, b, n, n)
        # The last label rides in the same batch as the repeats: once it is matched,
        # A has taken that whole batch in, so no sleep is needed to judge the repeats.
        again = await post_labels(session, a, [*labels[:BATCH], late[-1]], size=BATCH + 1)
        assert again == {"matched": 1, "duplicate": BATCH, "mismatched": 0, "unknown": 0}
        report = await report_when(session, b, n + 1, n + BATCH + 1)
    assert report["matched"] == n + 1, report
    check_backends(report, expected)
