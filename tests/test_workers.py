"""`--workers N`: worker 0's /metrics sums every worker's request counts."""

from __future__ import annotations

import json
from pathlib import Path

from router.dataplane.metrics import Metrics
from router.ops.workers import WorkerCounters


def sample(page: str, prefix: str) -> float:
    """The value of the one line of `page` starting with `prefix`."""
    lines = [line for line in page.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, (prefix, lines)
    return float(lines[0].rsplit(" ", 1)[1])


def test_exposition_adds_the_peers_snapshots_without_touching_its_own() -> None:
    own, other = Metrics(), Metrics()
    for _ in range(3):
        own.record("r", "a", 200, 0.010, "split", "id", 10)
    for status in (200, 503):
        other.record("r", "a", status, 0.020, "split", "id", 5)
    other.record("r", "b", 200, 0.5, "split", "id", 7)  # a backend only the peer served
    own.peers = lambda: [other.snapshot()]
    for _ in range(2):  # twice: merging must not add the peer into our own counts
        page = own.exposition()
        ok_a = 'router_requests_total{route="r",backend="a",role="",code="200"}'
        assert sample(page, ok_a) == 4
        assert sample(page, 'router_requests_total{route="r",backend="a",role="",code="503"}') == 1
        assert sample(page, 'router_request_errors_total{route="r",backend="a",role=""}') == 1
        assert sample(page, 'router_response_bytes_total{route="r",backend="a",role=""}') == 40
        assert sample(page, 'router_requests_total{route="r",backend="b",role="",code="200"}') == 1
        count_a = 'router_request_duration_seconds_count{route="r",backend="a",role=""}'
        assert sample(page, count_a) == 5
        assert sample(page, "router_metrics_workers ") == 2
    assert own.local("r", "a").requests == 3


def test_worker_files_round_trip_and_bad_ones_are_skipped(tmp_path: Path) -> None:
    m0, m1, m2 = Metrics(), Metrics(), Metrics()
    m1.record("r", "a", 200, 0.01, "split", "id", 1)
    m2.record("r", "a", 200, 0.01, "split", "id", 1)
    w0 = WorkerCounters(str(tmp_path), 0, m0)
    w0.write()  # its own file is never read back as a peer
    WorkerCounters(str(tmp_path), 1, m1).write()
    WorkerCounters(str(tmp_path), 2, m2).write()
    (tmp_path / "worker-3.json").write_text('[["r", "a", {"requests": ')  # torn: skipped
    peers = w0.peers()
    assert len(peers) == 2
    assert peers[0] == json.loads(json.dumps(m1.snapshot()))
    page = m0.exposition()
    assert sample(page, 'router_requests_total{route="r",backend="a",role="",code="200"}') == 2
    assert sample(page, "router_metrics_workers ") == 3
