"""The page as families: OpenMetrics when the scraper prefers it, and the workers' merge."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from router.dataplane.metrics import Metrics
from router.ops.admin import build_admin_app
from router.ops.exposition import (
    OPENMETRICS_TYPE,
    TEXT_TYPE,
    merge,
    parse,
    render_text,
    to_openmetrics,
    wants_openmetrics,
)
from tests.support.dataplane import backend, make_runtime

# what Prometheus 2.42 sends (captured from Debian's prometheus scraping a test server)
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

PAGE = """# HELP router_requests_total Requests answered.
# TYPE router_requests_total counter
router_requests_total{route="r",code="200"} 3.0
# HELP router_build_info 1, labelled.
# TYPE router_build_info gauge
router_build_info{version="0.1.0"} 1.0

# HELP odd A "quoted" word.
# TYPE odd untyped
odd 2
# HELP router_request_duration_seconds Time.
# TYPE router_request_duration_seconds histogram
router_request_duration_seconds_bucket{le="0.1"} 1
router_request_duration_seconds_bucket{le="+Inf"} 2
router_request_duration_seconds_sum 0.3
router_request_duration_seconds_count 2
"""


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        (PROMETHEUS_ACCEPT, True),
        ("application/openmetrics-text", True),
        ("text/plain;version=0.0.4", False),
        ("", False),
        ("*/*", False),
        ("application/openmetrics-text;q=0.2,text/plain;q=0.9", False),
        ("application/openmetrics-text;q=0", False),
        ("application/openmetrics-text;q=bad,text/plain", False),
    ],
)
def test_openmetrics_only_when_the_scraper_prefers_it(accept: str, openmetrics: bool) -> None:
    assert wants_openmetrics(accept) is openmetrics


def test_openmetrics_renames_counters_and_info_and_ends_with_eof() -> None:
    """Only HELP and TYPE lines change; samples are as they were; no blank line."""
    out = to_openmetrics(PAGE)
    lines = out.splitlines()
    assert "# TYPE router_requests counter" in lines
    assert "# HELP router_requests Requests answered." in lines
    assert 'router_requests_total{route="r",code="200"} 3.0' in lines
    assert "# TYPE router_build info" in lines
    assert 'router_build_info{version="0.1.0"} 1.0' in lines
    assert "# TYPE odd unknown" in lines
    assert '# HELP odd A \\"quoted\\" word.' in lines
    assert "# TYPE router_request_duration_seconds histogram" in lines
    assert "" not in lines
    assert lines[-1] == "# EOF"
    samples = [ln for ln in PAGE.splitlines() if ln and not ln.startswith("#")]
    assert [ln for ln in lines if not ln.startswith("#")] == samples


def test_parse_reads_families_with_their_histogram_samples() -> None:
    fams = parse(PAGE)
    assert list(fams) == ["router_requests_total", "router_build_info", "odd",
                          "router_request_duration_seconds"]  # fmt: skip
    hist = fams["router_request_duration_seconds"]
    assert hist.kind == "histogram"
    assert hist.samples["router_request_duration_seconds_count"] == "2"
    assert render_text(fams.values()).count("# TYPE") == 4


def test_merge_sums_counters_of_every_worker_and_process_gauges_of_live_ones() -> None:
    """Counters and histograms: every worker, a dead one's last figures included.
    In-flight (a summed gauge): live workers only. A shared-state gauge: worker 0's."""
    own = parse(
        '# TYPE router_mirror_sent_total counter\nrouter_mirror_sent_total{b="x"} 2\n'
        '# TYPE router_requests_in_flight gauge\nrouter_requests_in_flight{route="r"} 1\n'
        '# TYPE router_rollout_step gauge\nrouter_rollout_step{route="r"} 1\n'
    )
    peer = (
        '# TYPE router_mirror_sent_total counter\nrouter_mirror_sent_total{b="x"} 3\n'
        'router_mirror_sent_total{b="y"} 1.5\n'
        '# TYPE router_requests_in_flight gauge\nrouter_requests_in_flight{route="r"} 4\n'
        '# TYPE router_rollout_step gauge\nrouter_rollout_step{route="r"} 1\n'
        "# TYPE router_upstream_failures_total counter\nrouter_upstream_failures_total 7\n"
    )
    merged = merge(own, [(True, parse(peer)), (False, parse(peer))])
    assert merged["router_mirror_sent_total"].samples == {
        'router_mirror_sent_total{b="x"}': "8",
        'router_mirror_sent_total{b="y"}': "3",
    }
    assert merged["router_requests_in_flight"].samples == {
        'router_requests_in_flight{route="r"}': "5"
    }
    assert merged["router_rollout_step"].samples == {'router_rollout_step{route="r"}': "1"}
    assert merged["router_upstream_failures_total"].samples == {
        "router_upstream_failures_total": "14"
    }
    assert own["router_mirror_sent_total"].samples == {'router_mirror_sent_total{b="x"}': "2"}


async def test_admin_metrics_negotiates_the_format() -> None:
    """The admin API's /metrics: OpenMetrics for Prometheus, text for curl."""
    rt = make_runtime([backend("b", 1)])
    metrics = Metrics()
    metrics.record("main", "b", 200, 0.01, "fixed", "id", 5)
    async with TestClient(TestServer(build_admin_app(rt, metrics, None))) as client:
        om = await client.get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT})
        text = await client.get("/metrics")
        assert om.headers["Content-Type"] == OPENMETRICS_TYPE
        assert text.headers["Content-Type"] == TEXT_TYPE
        om_body, text_body = await om.text(), await text.text()
    assert om_body.endswith("# EOF\n")
    assert "# TYPE router_requests counter" in om_body
    assert "# TYPE router_requests_total counter" in text_body
    assert 'router_requests_total{route="main",backend="b",role="fixed",code="200"} 1' in text_body
