"""Drift detection: bins, the sliding window, replica sums, scores, the gate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.core.drift import (
    Collector,
    Column,
    DriftTracker,
    FeatureSpec,
    Reference,
    Window,
    counter_fields,
    counts_from_fields,
    extractor,
    measure_observe_cost,
)
from router.core.drift_matrix import MatrixBins
from router.core.drift_scores import js_distance, prediction_gate, psi, scores
from router.core.jsonpath import MISSING

VEC = FeatureSpec("features", "$.features", "vector")
NUM = FeatureSpec("x", "$.x", "number")
CAT = FeatureSpec("label", "$.label", "category")
RATE = 200.0  # simulated requests per second
WINDOW = Window(slot_seconds=1.0, slots=5)  # 1,000 requests at RATE


def normal_reference(rng: np.random.Generator, dims: int = 8, n: int = 2000) -> Reference:
    return Reference.fit([VEC], [(row,) for row in rng.normal(size=(n, dims)).tolist()])


def test_numeric_bins_are_deciles_plus_under_and_overflow() -> None:
    """A numeric feature gets 10 decile bins holding ~10 % each, and empty outer bins."""
    ref = Reference.fit([NUM], [(float(v),) for v in range(1000)])
    col = ref.columns[0]
    assert col.nbins == 13  # under, 10 deciles, exactly the max, over
    assert col.ref.tolist() == [0] + [100] * 9 + [99, 1, 0]
    counts = col.count_numbers(np.array([-1.0, 0.0, 998.5, 999.0, 1000.0]))
    assert counts.tolist() == [1, 1] + [0] * 8 + [1, 1, 1]


def test_discrete_numbers_merge_duplicate_edges() -> None:
    """A feature with three distinct values gets one bin per value, none merged."""
    ref = Reference.fit([NUM], [(v,) for v in [0, 1, 2] * 300])
    col = ref.columns[0]
    assert col.nbins == 5
    assert col.ref.tolist() == [0, 300, 300, 300, 0]


def test_categories_keep_top_k_and_other() -> None:
    """Categories beyond the top K fall into one 'other' bin; booleans read as JSON spells them."""
    samples = [("a",)] * 50 + [("b",)] * 30 + [(True,)] * 20 + [("rare",)] * 1
    ref = Reference.fit([CAT], samples, top_k=3)
    col = ref.columns[0]
    assert col.categories == ("a", "b", "true")
    assert col.count_labels(["a", "zzz", "rare", "true"]).tolist() == [1, 0, 1, 2]


def test_vector_indexes_are_features_and_bad_values_are_skipped() -> None:
    """Each vector index is a feature; wrong lengths, None, NaN and strings are not counted."""
    rng = np.random.default_rng(1)
    ref = normal_reference(rng, dims=3)
    assert ref.names() == ["features[0]", "features[1]", "features[2]"]
    tracker = DriftTracker(ref, WINDOW)
    for values in ([[0.1, 0.2, 0.3]], [[1.0, 2.0]], [None], [MISSING], [[1.0, "x", 2.0]]):
        tracker.observe(values)
    tracker.observe([[float("nan"), 0.0, 0.0]])
    counts = tracker.counts()
    assert [sum(counts[f"features[{i}]"]) for i in range(3)] == [1, 2, 2]
    assert tracker.skipped == 2


def test_scalar_features_ignore_wrong_types() -> None:
    """A number feature ignores booleans and strings; a category ignores objects and MISSING."""
    ref = Reference.fit([NUM, CAT], [(float(i), "a") for i in range(100)])
    tracker = DriftTracker(ref, WINDOW)
    for values in ([True, {"a": 1}], ["3", MISSING], [5, 7], [float("inf"), None]):
        tracker.observe(values)
    counts = tracker.counts()
    assert sum(counts["x"]) == 1
    assert counts["label"] == [0, 1]  # 7 is the label "7": other


def test_window_slides_old_slots_out() -> None:
    """Counts leave the window once their slot is older than `slots` slots."""
    ref = Reference.fit([NUM], [(float(i),) for i in range(100)])
    tracker = DriftTracker(ref, Window(slot_seconds=1.0, slots=3), now=0.0)
    for now in (0.5, 1.5, 2.5):
        tracker.advance(now)
        tracker.observe([10.0])
    assert sum(tracker.counts()["x"]) == 3
    tracker.advance(3.2)
    assert sum(tracker.counts()["x"]) == 2
    tracker.advance(1.0)  # a clock step back keeps the window where it is
    tracker.observe([10.0])
    tracker.advance(10.0)
    assert sum(tracker.counts()["x"]) == 0


def test_counts_add_up_across_replicas() -> None:
    """Two replicas' drained counter fields sum to the sum of their own counts."""
    rng = np.random.default_rng(2)
    ref = normal_reference(rng, dims=2)
    replicas = [DriftTracker(Reference.from_json(ref.to_json()), WINDOW) for _ in range(2)]
    stored: dict[int, dict[str, int]] = {}  # slot -> counter hash, as HINCRBY would build
    for i, row in enumerate(rng.normal(size=(900, 2)).tolist()):
        tracker = replicas[i % 2]
        tracker.advance(i / RATE)
        tracker.observe([row])
        if i % 97 == 0:
            for slot, counts in tracker.drain().items():
                for key, n in counter_fields(counts).items():
                    stored.setdefault(slot, {})[key] = stored.get(slot, {}).get(key, 0) + n
    for tracker in replicas:
        for slot, counts in tracker.drain().items():
            for key, n in counter_fields(counts).items():
                stored.setdefault(slot, {})[key] = stored.get(slot, {}).get(key, 0) + n
    now = 899 / RATE
    summed = counts_from_fields(ref, [stored.get(s, {}) for s in WINDOW.slot_ids(now)])
    mine = [r.counts() for r in replicas]
    assert summed == {
        k: [a + b for a, b in zip(mine[0][k], mine[1][k], strict=True)] for k in summed
    }
    assert sum(summed["features[0]"]) == 900


def test_fields_of_another_reference_are_ignored() -> None:
    """Counter fields naming unknown features or bins are skipped, not misread."""
    ref = Reference.fit([NUM], [(float(i),) for i in range(100)])
    out = counts_from_fields(ref, [{"x#1": 4, "x#99": 5, "y#0": 6, "x#a": 1}])
    assert out["x"][1] == 4
    assert sum(out["x"]) == 4


def test_reference_round_trips_through_json() -> None:
    """A reference read back from JSON bins values exactly like the original."""
    rng = np.random.default_rng(3)
    samples = [(row, str(rng.integers(0, 4))) for row in rng.normal(size=(500, 3)).tolist()]
    ref = Reference.fit([VEC, CAT], samples)
    back = Reference.from_json(ref.to_json())
    values = rng.normal(size=200) * 2
    for a, b in zip(ref.columns, back.columns, strict=True):
        assert a.name == b.name
        assert a.ref.tolist() == b.ref.tolist()
        if a.kind == "number":
            assert a.count_numbers(values).tolist() == b.count_numbers(values).tolist()
    assert back.specs == ref.specs


def test_collector_fits_on_the_first_n_observations() -> None:
    """The reference is the first `size` observations; later ones are not kept."""
    collector = Collector([NUM], size=10)
    done = [collector.observe((float(i),)) for i in range(15)]
    assert done.index(True) == 9
    assert collector.reference().columns[0].ref.sum() == 10


def test_extractor_reads_each_spec_path() -> None:
    """The extractor returns one raw value per spec from a parsed document."""
    extract = extractor([VEC, NUM, CAT])
    assert extract({"features": [1, 2], "label": "a"}) == ([1, 2], MISSING, "a")


def test_scores_alarm_only_with_enough_data() -> None:
    """Identical distributions score ~0; a shifted one alarms only at min_n values."""
    ref = Reference.fit([NUM, CAT], [(float(i % 100), "ab"[i % 2]) for i in range(1000)])
    same = {"x": ref.columns[0].ref.tolist(), "label": ref.columns[1].ref.tolist()}
    assert all(s.psi < 1e-9 and s.js < 1e-6 and not s.alarm for s in scores(ref, same))
    shifted = {"x": [0] * 12 + [400], "label": [400, 0, 0]}
    by_name = {s.name: s for s in scores(ref, shifted, min_n=500)}
    assert by_name["x"].psi > 1
    assert not by_name["x"].alarm
    by_name = {s.name: s for s in scores(ref, shifted, min_n=400)}
    assert by_name["x"].alarm
    assert by_name["label"].alarm
    assert by_name["x"].ks == pytest.approx(1.0)
    assert by_name["label"].ks is None
    assert 0.0 <= by_name["x"].js <= 1.0


def test_psi_and_js_of_disjoint_counts() -> None:
    """Disjoint distributions give JS distance 1 and a large, finite PSI."""
    assert abs(js_distance([10, 0], [0, 10]) - 1.0) < 1e-12
    assert 10 < psi([10, 0], [0, 10]) < 100


def simulate(
    seed: int, n: int, shift_at: int | None, feature: int = 3
) -> tuple[list[tuple[int, str]], float]:
    """Run n requests through a tracker, checking every 500: (index, feature) alarms, max PSI."""
    rng = np.random.default_rng(seed)
    ref = normal_reference(rng)
    data = rng.normal(size=(n, 8))
    if shift_at is not None:
        data[shift_at:, feature] += 1.0
    tracker = DriftTracker(ref, WINDOW)
    alarms, top = [], 0.0
    for i, row in enumerate(data.tolist()):
        tracker.observe([row])
        if i % 100 == 99:
            tracker.advance((i + 1) / RATE)
        if i % 500 == 499:
            found = scores(ref, tracker.counts())
            alarms += [(i + 1, s.name) for s in found if s.alarm]
            top = max([top, *(s.psi for s in found)])
    return alarms, top


def test_false_alarms_on_unshifted_data() -> None:
    """100,000 requests from the reference's own distribution raise at most one alarm."""
    alarms, top = simulate(seed=11, n=100_000, shift_at=None)
    print(f"false alarms: {len(alarms)} in 100,000 requests, 200 checks x 8 features;")
    print(f"largest PSI seen {top:.3f} (threshold 0.2, window 1,000)")
    assert len(alarms) <= 1


def test_one_std_shift_alarms_on_that_feature_within_2000() -> None:
    """Shifting one feature's mean by 1 std alarms, naming it, within 2,000 requests."""
    for seed in (21, 22, 23):
        alarms, _ = simulate(seed=seed, n=6_000, shift_at=3_000)
        first = min(i for i, _ in alarms) - 3_000
        print(f"seed {seed}: first alarm {first} requests after the shift")
        assert first <= 2_000
        assert {name for _, name in alarms} == {"features[3]"}


def test_prediction_gate_fails_a_constant_label() -> None:
    """A candidate answering one label (with HTTP 200) fails against a varied stable."""
    ref = Reference.fit([CAT], [(x,) for x in ["setosa", "versicolor", "virginica"] * 100])
    stable, candidate = DriftTracker(ref, WINDOW), DriftTracker(ref, WINDOW)
    rng = np.random.default_rng(4)
    for label in rng.choice(["setosa", "versicolor", "virginica"], size=600):
        stable.observe([str(label)])
        candidate.observe(["setosa"])
    result = prediction_gate(candidate.counts(), stable.counts(), 0.2, 200)
    print(f"constant label: {result}")
    assert result.verdict == "fail"
    assert result.feature == "label"
    assert result.psi > 0.2


def test_prediction_gate_passes_same_answers_and_waits_on_few() -> None:
    """Same-distribution answers pass once both sides have min_n; before that, wait."""
    rng = np.random.default_rng(5)
    ref = Reference.fit([NUM, CAT], [(v, "ab"[v > 0]) for v in rng.normal(size=2000).tolist()])
    verdicts = []
    for _ in range(20):
        stable, candidate = DriftTracker(ref, WINDOW), DriftTracker(ref, WINDOW)
        for v in rng.normal(size=3000).tolist():
            stable.observe([v, "ab"[v > 0]])
        for v in rng.normal(size=250).tolist():
            candidate.observe([v, "ab"[v > 0]])
        verdicts.append(prediction_gate(candidate.counts(), stable.counts(), 0.2, 200).verdict)
    assert verdicts == ["pass"] * 20
    few = {"x": [0] * 12 + [50], "label": [50, 0, 0]}
    assert prediction_gate(few, stable.counts(), 0.2, 200).verdict == "wait"


def test_prediction_drift_per_backend_on_outputs() -> None:
    """Output scores drifting on one backend alarm there and not on the other."""
    rng = np.random.default_rng(6)
    score = FeatureSpec("score", "$.score", "number")
    ref = Reference.fit([score, CAT], [(float(v), "yes") for v in rng.uniform(size=2000)])
    backends = {"v1": DriftTracker(ref, WINDOW), "v2": DriftTracker(ref, WINDOW)}
    for v in rng.uniform(size=800):
        backends["v1"].observe([float(v), "yes"])
        backends["v2"].observe([float(v) ** 3, "yes"])  # scores crowd toward 0
    alarmed = {b: [s.name for s in scores(ref, t.counts()) if s.alarm] for b, t in backends.items()}
    assert alarmed == {"v1": [], "v2": ["score"]}


def test_observe_cost_figure() -> None:
    """measure_observe_cost returns a positive µs-per-request figure (printed, not asserted)."""
    cost = measure_observe_cost(20_000)
    print(f"observe: {cost:.2f} µs per request (8-vector + label, batch 256)")
    assert cost > 0


@given(
    st.lists(
        st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=9, unique=True),
        min_size=1,
        max_size=6,
    ),
    st.lists(
        st.lists(st.one_of(st.floats(-6, 6), st.just(float("nan")), st.just(float("inf")))),
        min_size=0,
        max_size=40,
    ),
)
def test_a_vector_is_binned_as_each_of_its_columns_would_be(
    edges: list[list[float]], rows: list[list[float]]
) -> None:
    """MatrixBins over every column at once equals Column.count_numbers column by column,
    edge values, non-finite values and columns of different bin counts included."""
    columns = [Column(f"v[{j}]", "number", sorted(e), ()) for j, e in enumerate(edges)]
    d = len(columns)
    matrix = np.asarray([(r * d)[:d] if r else [0.0] * d for r in rows], dtype=np.float64)
    matrix = matrix.reshape(len(rows), d)
    counts = MatrixBins([c.edges for c in columns]).count(matrix)
    for j, column in enumerate(columns):
        values = matrix[:, j]
        expected = column.count_numbers(values[np.isfinite(values)])
        assert counts[j, : column.nbins].tolist() == expected.tolist()
        assert counts[j, column.nbins :].sum() == 0
