"""routerctl's canary view: the ramp, the gates and why, from the admin API's JSON."""

from __future__ import annotations

from typing import Any

from router.ops.cli_rollout import progress_bar, rollout_lines


def entry(**rollout: Any) -> dict[str, Any]:
    base = {"kind": "canary", "phase": "progressing", "revision": 2, "weight_bp": 2500}
    return {"name": "iris", "rollout": {**base, **rollout}}


def test_progress_bar_fills_in_proportion_to_the_weight() -> None:
    """A quarter of the weight fills a quarter of the bar and lists every step."""
    bar = progress_bar(2500, [500, 2500, 10_000])
    assert bar.startswith("[" + "#" * 10 + "." * 30 + "]")
    assert "25% now; steps 5% -> 25% -> 100%" in bar


def test_view_shows_each_gate_with_figures_verdict_and_why() -> None:
    """Every gate appears with its verdict words and figures; the reason is the latest one."""
    gates = [
        {"name": "error_rate", "verdict": "pass", "value": 0.001, "threshold": 0.01,
         "candidate_n": 812, "baseline_n": 7900, "dry_run": False, "detail": "no worse"},
        {"name": "latency", "verdict": "wait", "value": 0.0, "threshold": 1.5,
         "candidate_n": 40, "baseline_n": 700, "dry_run": True, "detail": "need 100"},
    ]  # fmt: skip
    analysis = {"steps": [500, 2500, 10_000], "reason": "step 2/3 at 25 %: judging", "gates": gates}
    text = "\n".join(rollout_lines(entry(stable="v1", candidate="v2"), analysis))
    assert "v1 (stable) vs v2 (candidate)" in text
    assert "why      step 2/3 at 25 %: judging" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("error_rate  "))
    assert row.split()[1:5] == ["PASS", "0.001", "0.01", "812"]
    assert "waiting for data (dry run)" in text


def test_promoted_view_names_the_rollback_target() -> None:
    """After a promotion the view says who was promoted and what rollback returns to."""
    r = entry(phase="promoted", stable="v2", candidate="v2", previous_stable="v1")
    assert "v2 promoted; rollback target v1" in rollout_lines(r, None)[0]


def test_no_view_for_a_route_without_a_canary() -> None:
    """Split and shadow routes show no rollout block."""
    assert rollout_lines({"name": "r", "rollout": None}, None) == []
