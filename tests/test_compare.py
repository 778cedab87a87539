"""Shadow vs primary comparison: per-kind agreement, structural diffs, counters
that add up across replicas, summaries, the noise floor and samples."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.core.compare import OTHER, Answer, compare, diff_paths
from router.core.compare_config import parse_compare
from router.core.compare_kinds import KINDS, FieldSpec, cosine, total_variation
from router.core.stats import wilson
from router.shadow.figures import (
    Tally,
    counter_name,
    fold_confusion,
    noise_report,
    quantile,
    summarize,
    tally_fields,
)
from router.shadow.records import disagreement_record
from router.state.base import StateStore

KIND_WORDS = ", ".join(KINDS)


def field(path: str, kind: str, **settings: object) -> FieldSpec:
    return FieldSpec(path, kind, **settings)  # type: ignore[arg-type]


def answer(doc: object, status: int = 200, latency: float = 0.01) -> Answer:
    return Answer(status, json.dumps(doc).encode(), latency)


def add_up(*hashes: Mapping[str, int]) -> dict[str, int]:
    """What HINCRBY leaves in the store after several flushes."""
    out: dict[str, int] = {}
    for h in hashes:
        for key, value in h.items():
            out[key] = out.get(key, 0) + value
    return out


LABEL = field("$.label", "label")
SCORE = field("$.score", "number", abs_tol=0.01, rel_tol=0.0)
PROBS = field("$.probs", "probs")
EMB = field("$.emb", "vector", metric="cosine", min_similarity=0.99)


# -- per kind -------------------------------------------------------------------


def test_same_model_within_tolerance_agrees_everywhere() -> None:
    """Answers differing only by float noise below the tolerances agree 100 %."""
    rng = random.Random(7)
    tally = Tally("cmp:v2")
    for _ in range(300):
        probs = [rng.random() for _ in range(3)]
        label, score = "abc"[probs.index(max(probs))], rng.random()
        doc = {"label": label, "score": score, "probs": probs}
        noisy = {
            "label": label,
            "score": score + rng.uniform(-1e-3, 1e-3),
            "probs": [p + rng.uniform(-1e-9, 1e-9) for p in probs],
        }
        tally.add(compare([LABEL, SCORE, PROBS], answer(doc), answer(noisy)))
    summary = summarize(tally.drain()["cmp:v2"])
    assert summary.agreement.value == 1.0
    for name in ("$.label", "$.score", "$.probs"):
        assert summary.fields[name].agreement.k == summary.fields[name].agreement.n == 300
    assert summary.fields["$.score"].mean_diff is not None
    assert 0 < summary.fields["$.score"].mean_diff < 1e-3


def test_constant_label_agreement_is_that_labels_share() -> None:
    """A shadow that always says 'cat' agrees exactly as often as the truth is 'cat'."""
    rng = random.Random(3)
    labels = [rng.choices(["cat", "dog", "owl"], weights=[6, 3, 1])[0] for _ in range(2000)]
    tally = Tally()
    for label in labels:
        tally.add(compare([LABEL], answer({"label": label}), answer({"label": "cat"})))
    summary = summarize(tally.drain()["cmp"])
    rate = summary.fields["$.label"].agreement
    assert rate.k == labels.count("cat")
    assert rate.value == pytest.approx(0.6, abs=0.04)
    lo, hi = rate.interval
    assert lo < labels.count("cat") / 2000 < hi
    cells = {(p, s): n for p, s, n in summary.fields["$.label"].confusion}
    assert cells == {(x, "cat"): labels.count(x) for x in ("cat", "dog", "owl")}


def test_number_tolerance_is_abs_plus_rel_of_primary() -> None:
    """|a-b| <= abs + rel*|a| decides; the diff is |a-b|."""
    spec = field("$.x", "number", abs_tol=0.5, rel_tol=0.1)
    ok = compare([spec], answer({"x": 100.0}), answer({"x": 110.5})).fields[0]
    bad = compare([spec], answer({"x": 100.0}), answer({"x": 110.6})).fields[0]
    assert ok.agree
    assert ok.diff == pytest.approx(10.5)
    assert not bad.agree
    assert bad.reason == "differs"


def test_probs_tvd_and_top1() -> None:
    """probs agree on argmax; the distance is half the L1 distance."""
    p, q = [0.6, 0.3, 0.1], [0.5, 0.1, 0.4]
    result = compare([PROBS], answer({"probs": p}), answer({"probs": q})).fields[0]
    assert result.agree
    assert result.labels == ("0", "0")
    assert result.diff == pytest.approx(0.5 * (0.1 + 0.2 + 0.3))
    flip = compare([PROBS], answer({"probs": p}), answer({"probs": [0.2, 0.7, 0.1]})).fields[0]
    assert not flip.agree
    assert flip.labels == ("0", "1")
    named = compare(
        [PROBS], answer({"probs": {"cat": 0.9, "dog": 0.1}}), answer({"probs": {"dog": 1.0}})
    ).fields[0]
    assert named.labels == ("cat", "dog")
    assert named.diff == pytest.approx(0.9)
    assert total_variation({"a": 1.0}, {"b": 1.0}) == 1.0


def test_vector_cosine_and_max_abs() -> None:
    """cosine compares directions (scale-free); max_abs bounds every coordinate."""
    assert cosine([1.0, 0.0], [0.0, 2.0]) == 0.0
    assert cosine([1.0, 2.0], [2.0, 4.0]) == pytest.approx(1.0)
    assert cosine([0.0, 0.0], [0.0, 0.0]) == 1.0
    inf, nan = float("inf"), float("nan")
    assert not compare([EMB], answer({"emb": [inf, 1]}), answer({"emb": [inf, 2]})).agree
    strict = field("$.emb", "vector", tol=0.0)
    for spec in (EMB, strict):  # identical non-finite coordinates are not a difference
        assert compare([spec], answer({"emb": [inf, nan, 1]}), answer({"emb": [inf, nan, 1]})).agree
    scaled = compare([EMB], answer({"emb": [1, 2, 3]}), answer({"emb": [2, 4, 6.01]}))
    assert scaled.fields[0].agree
    assert scaled.fields[0].similarity == pytest.approx(1.0, abs=1e-4)
    turned = compare([EMB], answer({"emb": [1, 0]}), answer({"emb": [1, 1]})).fields[0]
    assert not turned.agree
    assert turned.similarity == pytest.approx(2**-0.5)
    spec = field("$.emb", "vector", metric="max_abs", tol=0.05)
    near = compare([spec], answer({"emb": [1, 2]}), answer({"emb": [1.04, 1.96]})).fields[0]
    far = compare([spec], answer({"emb": [1, 2]}), answer({"emb": [1.0, 2.06]})).fields[0]
    assert near.agree
    assert not far.agree
    assert far.diff == pytest.approx(0.06)


@pytest.mark.parametrize(
    ("spec", "a", "b", "reason"),
    [
        (LABEL, {"label": "x"}, {}, "missing"),
        (LABEL, {}, {"label": "x"}, "missing"),
        (LABEL, {"label": "x"}, {"label": ["x"]}, "type"),
        (LABEL, {"label": 1}, {"label": "1"}, "differs"),
        (SCORE, {"score": 1}, {"score": "1"}, "type"),
        (SCORE, {"score": 1}, {"score": True}, "type"),
        (EMB, {"emb": [1, 2]}, {"emb": [1, 2, 3]}, "shape"),
        (PROBS, {"probs": [0.5, 0.5]}, {"probs": "a"}, "type"),
        (PROBS, {"probs": [1.0]}, {"probs": [0.5, 0.5]}, "shape"),
    ],
)
def test_missing_and_wrong_types_disagree_with_a_reason(
    spec: FieldSpec, a: object, b: object, reason: str
) -> None:
    """A field absent on one side or of the wrong type is a disagreement, with its reason."""
    result = compare([spec], answer(a), answer(b)).fields[0]
    assert not result.agree
    assert result.reason == reason


def test_absent_on_both_sides_is_not_counted() -> None:
    """A field neither model produced counts as absent, not as (dis)agreement."""
    comparison = compare([LABEL, SCORE], answer({"score": 1}), answer({"score": 1}))
    assert comparison.agree
    counters = tally_fields(comparison)["cmp"]
    assert counters["f|$.label|absent"] == 1
    assert "f|$.label|n" not in counters
    assert counters["f|$.score|agree"] == 1


# -- whole answers --------------------------------------------------------------


def test_structural_compare_lists_exact_differing_paths() -> None:
    """With no field configured, every differing leaf is reported by its path."""
    a = {"a": {"b": [1, 2, 3.0]}, "c": "x", "d": True, "gone": 1, "odd key": [0]}
    b = {"a": {"b": [1, 2, 3.5, 4]}, "c": "x", "d": 1, "new": None, "odd key": [0.0000001]}
    comparison = compare([], answer(a), answer(b), float_tolerance=1e-6)
    assert comparison.paths == ("$.a.b[2]", "$.a.b[3]", "$.d", "$.gone", "$.new")
    assert comparison.body_equal is False
    assert not comparison.agree
    assert diff_paths(a, b, 1e-6, limit=2) == ["$.a.b[2]", "$.a.b[3]"]
    assert diff_paths({"x": 1.0}, {"x": 1.0 + 1e-9}, 1e-6) == []


def test_non_json_bodies_compare_as_bytes() -> None:
    """A body that is not JSON is compared byte for byte and the reason is kept."""
    same = compare([], Answer(200, b"<html>", 0.1), Answer(200, b"<html>", 0.2))
    assert same.agree
    assert same.errors == ("primary: not JSON", "shadow: not JSON")
    half = compare([LABEL], answer({"label": "a"}), Answer(502, b"bad gateway", 0.2))
    assert not half.agree
    assert half.errors == ("shadow: not JSON",)
    assert half.fields[0].reason == "missing"
    assert not half.status_match


def test_status_and_latency_always_compared() -> None:
    """Status codes are compared and latency delta is shadow minus primary."""
    comparison = compare([], answer({}, 200, 0.010), answer({}, 500, 0.025))
    assert not comparison.status_match
    assert not comparison.agree
    assert comparison.latency_delta == pytest.approx(0.015)
    lost = compare([], answer({}), Answer(0, b"", 2.0))
    assert lost.errors == ("shadow: no answer",)
    assert tally_fields(lost)["cmp"]["no_answer"] == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=25,
)


@settings(max_examples=300)
@given(json_values)
def test_compare_of_a_document_with_itself_always_agrees(doc: object) -> None:
    """compare(x, x) agrees for any JSON document (NaN and infinities included)."""
    body = answer(doc)
    assert compare([], body, body).agree
    fields = [field("$", "number"), field("$[0]", "vector"), field("$.a", "probs")]
    for result in compare([LABEL, *fields], body, body).fields:
        assert result.agree or result.reason in ("absent", "type", "shape")


# -- counters, summaries ------------------------------------------------------


def test_counters_from_many_replicas_add_up_to_one() -> None:
    """Summing tallies from several replicas gives the same summary as one tally."""
    rng = random.Random(11)
    comparisons = [
        compare(
            [LABEL, SCORE],
            answer({"label": rng.choice("ab"), "score": rng.random()}, 200, rng.random() / 10),
            answer({"label": rng.choice("ab"), "score": rng.random()}, 200, rng.random() / 10),
        )
        for _ in range(200)
    ]
    one, replicas = Tally(), [Tally(), Tally(), Tally()]
    for i, c in enumerate(comparisons):
        one.add(c)
        replicas[i % 3].add(c)
    summed = add_up(*(r.drain()["cmp"] for r in replicas))
    assert summed == one.drain()["cmp"]
    as_json = json.loads(json.dumps(summarize(summed).to_dict()))
    assert as_json["n"] == 200
    assert as_json["fields"]["$.label"]["agreement"]["k"] == sum(
        c.fields[0].agree for c in comparisons
    )
    assert all(isinstance(v, int) for v in summed.values())


async def test_replicas_add_up_through_the_store(store: StateStore, peer: StateStore) -> None:
    """Two replicas flushing to a real store read back as one process's summary."""
    rng = random.Random(2)
    labels = [(rng.choice("abc|%"), rng.choice("abc")) for _ in range(120)]
    comparisons = [
        compare(
            [LABEL, SCORE], answer({"label": p, "score": 0.5}), answer({"label": s, "score": 0.52})
        )
        for p, s in labels
    ]
    one, replicas = (
        Tally(counter_name("v2")),
        (Tally(counter_name("v2")), Tally(counter_name("v2"))),
    )
    for i, c in enumerate(comparisons):
        one.add(c)
        replicas[i % 2].add(c)
    await store.add_counters("scores", replicas[0].drain(), ttl=60)
    await peer.add_counters("scores", replicas[1].drain(), ttl=60)
    read = await store.read_counters("scores", ["cmp:v2"])
    assert summarize(read["cmp:v2"]) == summarize(one.drain()["cmp:v2"])
    assert summarize(read["cmp:v2"]).fields["$.score"].mean_diff == pytest.approx(0.02)


def test_tally_drain_and_restore() -> None:
    """Draining empties the tally; restoring a failed flush sends it again."""
    tally = Tally(counter_name("model-v2"))
    tally.add(compare([SCORE], answer({"score": 1.0}), answer({"score": 1.5})))
    first = tally.drain()
    assert list(first) == ["cmp:model-v2"]
    assert tally.drain() == {}
    tally.restore(first)
    assert tally.drain() == first
    assert tally.maxima == {"$.score": 0.5}


def test_labels_are_bounded_per_replica_and_in_summaries() -> None:
    """Past max_labels distinct labels new ones count as OTHER; summaries fold to top N."""
    tally = Tally(max_labels=3)
    for label in ["a", "b", "c", "d", "e", "a"]:
        tally.add(compare([LABEL], answer({"label": label}), answer({"label": label})))
    cells = summarize(tally.drain()["cmp"]).fields["$.label"].confusion
    assert {(p, s): n for p, s, n in cells} == {
        ("a", "a"): 2,
        ("b", "b"): 1,
        ("c", "c"): 1,
        (OTHER, OTHER): 2,
    }
    folded = fold_confusion({("a", "a"): 5, ("b", "a"): 3, ("c", "d"): 1}, top=2)
    assert folded == (("a", "a", 5), ("b", "a", 3), (OTHER, OTHER, 1))


def test_labels_with_separators_survive_the_counter_keys() -> None:
    """A label holding `|` or `%` reads back unchanged from the counter hash."""
    comparison = compare([LABEL], answer({"label": "a|b%7C"}), answer({"label": "c"}))
    cells = summarize(tally_fields(comparison)["cmp"]).fields["$.label"].confusion
    assert cells == (("a|b%7C", "c", 1),)


def test_summary_latency_quantiles_per_side() -> None:
    """p50/p99 of each side come from fixed buckets, within one bucket (19 %)."""
    tally = Tally()
    for i in range(1, 101):
        tally.add(compare([], answer({}, latency=i / 1000), answer({}, latency=i / 100)))
    summary = summarize(tally.drain()["cmp"])
    (p50_p, p50_s), (p99_p, p99_s) = summary.latency_p50, summary.latency_p99
    assert p50_p is not None
    assert p50_s is not None
    assert p99_p is not None
    assert p99_s is not None
    assert 0.050 <= p50_p < 0.050 * 1.19
    assert 0.50 <= p50_s < 0.50 * 1.19
    assert 0.099 <= p99_p < 0.099 * 1.19
    assert 0.99 <= p99_s < 0.99 * 1.19
    assert summary.mean_latency_delta == pytest.approx(0.4545, abs=1e-4)
    assert quantile([0, 0], 0.5) is None


def test_summary_of_nothing_has_no_rates() -> None:
    """An empty counter hash summarises to n = 0 and no rates, not to zeros."""
    summary = summarize({})
    assert summary.n == 0
    assert summary.agreement.value is None
    assert summary.latency_p50 == (None, None)
    assert summary.fields == {}


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (81, 263, 0.2553, 0.3662),
    ],
)
def test_wilson_known_values(k: int, n: int, lo: float, hi: float) -> None:
    """Wilson 95 % bounds match published values."""
    got_lo, got_hi = wilson(k, n)
    assert got_lo == pytest.approx(lo, abs=1e-4)
    assert got_hi == pytest.approx(hi, abs=1e-4)


def test_wilson_without_data_is_uninformative() -> None:
    """With n = 0 the interval is the whole of [0, 1]."""
    assert wilson(0, 0) == (0.0, 1.0)


# -- noise floor ------------------------------------------------------------------


def _label_stream(disagree_every: int, n: int) -> dict[str, int]:
    tally = Tally()
    for i in range(n):
        shadow = "b" if disagree_every and i % disagree_every == 0 else "a"
        tally.add(compare([LABEL], answer({"label": "a"}), answer({"label": shadow})))
    return tally.drain()["cmp"]


def test_noise_report_separates_real_disagreement_from_noise() -> None:
    """A shadow disagreeing 20 % against a 1 % noise floor is not noisy; excess ≈ 19 %."""
    report = noise_report(summarize(_label_stream(5, 1000)), summarize(_label_stream(100, 1000)))
    entry = report.fields["$.label"]
    assert not entry.noisy
    assert not report.noisy
    assert entry.excess == pytest.approx(0.19)


def test_noise_report_flags_disagreement_within_noise() -> None:
    """A shadow disagreeing as often as the primary disagrees with itself is noisy."""
    report = noise_report(summarize(_label_stream(10, 500)), summarize(_label_stream(9, 500)))
    assert report.fields["$.label"].noisy
    assert report.noisy
    assert report.fields["$.label"].excess == 0.0
    empty = noise_report(summarize(_label_stream(5, 500)), summarize({}))
    assert empty.noisy  # no evidence about the noise yet


# -- samples ------------------------------------------------------------------------


def test_disagreement_record_truncates_and_keeps_fields() -> None:
    """A sample holds both answers cut to max_chars, and the disagreeing fields."""
    p = json.dumps({"label": "a", "pad": "x" * 500}).encode()
    s = json.dumps({"label": "b", "pad": "y" * 500}).encode()
    comparison = compare([LABEL], Answer(200, p, 0.01), Answer(200, s, 0.02))
    record = json.loads(disagreement_record("req-1", comparison, p, s, max_chars=100))
    assert record["id"] == "req-1"
    assert record["status"] == [200, 200]
    assert record["latency_ms"] == [10.0, 20.0]
    assert record["fields"] == [
        {
            "field": "$.label",
            "reason": "differs",
            "labels": ["a", "b"],
            "primary": '"a"',
            "shadow": '"b"',
        }
    ]
    assert record["primary"].startswith(p.decode()[:100])
    assert "(+4" in record["primary"]
    assert len(record["shadow"]) < 130


def test_disagreement_record_fields_only_drops_the_answers() -> None:
    """fields_only keeps the compared values and nothing else of either answer."""
    p, s = b'{"label": "a", "secret": "ssn"}', b'{"label": "b", "secret": "ssn"}'
    comparison = compare([LABEL], Answer(200, p, 0.0), Answer(200, s, 0.0))
    text = disagreement_record("r", comparison, p, s, fields_only=True, request_body=None)
    assert "ssn" not in text
    assert "primary" in json.loads(text)["fields"][0]
    assert "request" not in json.loads(text)
    with_request = disagreement_record("r", comparison, p, s, request_body=b'{"x": 1}')
    assert json.loads(with_request)["request"] == '{"x": 1}'


# -- config ---------------------------------------------------------------------------


def test_parse_compare_reads_every_kind() -> None:
    """Each kind keeps its own settings; `1e-6` (a YAML string) is read as a number."""
    errors: list[str] = []
    items = [
        ("c[0]", {"field": "$.label", "kind": "label"}),
        ("c[1]", {"field": "$.score", "kind": "number", "abs": 0.01, "rel": "1e-3"}),
        ("c[2]", {"field": "$.emb", "kind": "vector", "metric": "cosine", "min_similarity": 0.9}),
        ("c[3]", {"field": "$.emb2", "kind": "vector", "tol": 0.1}),
        ("c[4]", {"field": "$.p", "kind": "probs"}),
    ]
    specs = parse_compare(items, errors)
    assert errors == []
    assert [s.kind for s in specs] == ["label", "number", "vector", "vector", "probs"]
    assert (specs[1].abs_tol, specs[1].rel_tol) == (0.01, 0.001)
    assert (specs[2].metric, specs[2].min_similarity) == ("cosine", 0.9)
    assert (specs[3].metric, specs[3].tol) == ("max_abs", 0.1)


def test_parse_compare_reports_exact_paths() -> None:
    """Every problem is reported at its own path, all in one pass."""
    errors: list[str] = []
    items = [
        ("s.compare[0]", {"field": "$.a[", "kind": "label"}),
        ("s.compare[1]", {"field": "$.b", "kind": "colour"}),
        ("s.compare[2]", {"field": "$.c", "kind": "label", "abs": 0.1}),
        ("s.compare[3]", {"field": "$.d", "kind": "number", "abs": -1}),
        ("s.compare[4]", {"field": "$.d", "kind": "number"}),
        ("s.compare[5]", "$.e"),
        ("s.compare[6]", {"field": "$.f"}),
    ]
    specs = parse_compare(items, errors)
    assert [s.field for s in specs] == ["$.c", "$.d"]  # what could be read; errors refuse it
    assert errors == [
        "s.compare[0].field: bad JSONPath: expected an index, '*' or a quoted name at "
        "position 4, got '$.a['",
        f"s.compare[1].kind: must be one of {KIND_WORDS}, got 'colour'",
        "s.compare[2].abs: unknown key",
        "s.compare[3].abs: must be a number in 0..inf, got -1",
        "s.compare[4].field: is compared twice, got '$.d'",
        "s.compare[5]: must be a mapping like {field: $.label, kind: label}",
        f"s.compare[6].kind: is required, one of {KIND_WORDS}",
    ]
