"""The ladder's bars (router/core/ladder.py) and the canary's accuracy gate, pure."""

from __future__ import annotations

from typing import Any

from router.core.analysis import parse_analysis
from router.core.confkit import Node
from router.core.gates import Sample
from router.core.gates_accuracy import AccuracyGate
from router.core.ladder import DEFAULT_LADDER, Bar, Evidence, LadderSpec, judge, parse_ladder, plan

AUTO = LadderSpec(
    advance="auto",
    bars=(
        ("shadow", Bar()),
        ("assist", Bar(min_samples=100, min_agreement=0.9)),
        ("partial", Bar(min_samples=100, min_agreement=0.9, min_labels=50, accuracy_margin=0.05)),
        ("full", Bar(min_requests=100, max_deferral=0.2)),
    ),
)


def test_a_bar_waits_below_its_sample_passes_on_evidence_and_fails_on_its_absence() -> None:
    """agreement 0.92 with n = 340 of 500 waits; 600 of 600 passes; 50 % of 600 fails."""
    bar = LadderSpec(bars=(("assist", Bar(min_samples=500, min_agreement=0.95)),))
    waiting = judge("assist", bar, Evidence(compared=340, agreeing=313))
    assert waiting.verdict == "wait"
    assert waiting.text().startswith("assist — agreement 0.921 [")
    assert waiting.text().endswith(">= 0.95? n = 340/500")
    assert judge("assist", bar, Evidence(compared=600, agreeing=600)).verdict == "pass"
    assert judge("assist", bar, Evidence(compared=600, agreeing=300)).verdict == "fail"


def test_accuracy_margin_and_deferral() -> None:
    """The model within the margin of the human passes; 30 points below fails; a deferral
    rate clearly above its ceiling fails."""
    spec = LadderSpec(bars=(("full", Bar(min_labels=50, accuracy_margin=0.05)),))
    close = Evidence(model_labels=4000, model_correct=3700, human_labels=4000, human_correct=3720)
    worse = Evidence(model_labels=400, model_correct=240, human_labels=400, human_correct=360)
    assert judge("full", spec, close).verdict == "pass"
    assert judge("full", spec, worse).verdict == "fail"
    deferral = LadderSpec(bars=(("full", Bar(min_requests=100, max_deferral=0.1)),))
    assert judge("full", deferral, Evidence(requests=600, deferred=180)).verdict == "fail"
    assert judge("full", deferral, Evidence(requests=2000, deferred=60)).verdict == "pass"


def test_auto_climbs_one_level_at_a_time_and_steps_down_when_the_evidence_fails() -> None:
    """human -> shadow at once; shadow -> assist on agreement; partial -> assist on an
    accuracy drop or an alarm; never past advance_to; manual never moves."""
    assert plan("human", AUTO, Evidence()) is not None
    assert plan("human", AUTO, Evidence())[0] == "shadow"  # type: ignore[index]
    assert plan("shadow", AUTO, Evidence(compared=50, agreeing=50)) is None
    up = plan("shadow", AUTO, Evidence(compared=200, agreeing=200))
    assert up is not None
    assert up[0] == "assist"
    drop = Evidence(model_labels=300, model_correct=150, human_labels=300, human_correct=290)
    down = plan("partial", AUTO, drop)
    assert down is not None
    assert down[0] == "assist"
    assert "model accuracy" in down[1]
    alarm = plan("partial", AUTO, Evidence(alarms=("model",)))
    assert alarm is not None
    assert alarm[0] == "assist"
    at_top = plan("partial", AUTO, Evidence(requests=1000, deferred=10))
    assert at_top is None  # full is past advance_to (partial)
    assert plan("human", DEFAULT_LADDER, Evidence()) is None  # manual


def test_evidence_block_is_read_with_exact_paths() -> None:
    """A level written under evidence replaces its default bar; typos name their path."""
    errors: list[str] = []
    block: dict[str, Any] = {
        "advance": "auto",
        "evidence": {"assist": {"min_samples": 10}, "ful": {}, "partial": {"min_agreemnt": 1}},
    }
    spec = parse_ladder(Node(block, "a", errors), "human")
    assert spec.advance == "auto"
    assert spec.bar("assist") == Bar(min_samples=10)
    assert "a.evidence.ful: is not a level to enter; one of shadow, assist, partial, full" in errors
    assert "a.evidence.partial.min_agreemnt: unknown key" in errors


def test_accuracy_gate_aborts_a_candidate_30_points_worse() -> None:
    """0.6 vs 0.9 on 200 labels each fails; 0.89 vs 0.9 on 5,000 passes; few labels wait."""
    gate = AccuracyGate(max_drop=0.05, min_labels=50)
    none = Sample()
    worse = gate.judge(none, none, {"accuracy": {"candidate": (120, 200), "stable": (180, 200)}})
    assert worse.verdict == "fail", worse.detail
    fine = {"accuracy": {"candidate": (4450, 5000), "stable": (4500, 5000)}}
    assert gate.judge(none, none, fine).verdict == "pass"
    few = {"accuracy": {"candidate": (9, 10), "stable": (9, 10)}}
    assert gate.judge(none, none, few).verdict == "wait"


def test_accuracy_is_a_gate_word_of_the_canary() -> None:
    errors: list[str] = []
    spec = parse_analysis(Node({"accuracy": {"max_drop": 0.1}}, "analysis", errors))
    assert errors == []
    assert [g.name for g in spec.gates] == ["accuracy"]
