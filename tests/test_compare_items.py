"""Comparison item by item: batches, shapes, unreadable answers, figures with requests
and items both, and the plain-words hints when a field is read the wrong way."""

from __future__ import annotations

import json
import random

from router.core.compare import Answer, compare
from router.core.compare_kinds import FieldSpec
from router.core.protocols import get
from router.shadow.figures import Tally, compare_id, summarize
from router.shadow.hints import add_hints

V2 = get("v2")
PREDICT = FieldSpec("predict", "label")
PROBA = FieldSpec("predict_proba", "probs")


def v2(classes: list[int], *, flat: bool = True, status: int = 200) -> Answer:
    n = len(classes)
    proba = [[1.0 if c == k else 0.0 for k in range(3)] for c in classes]
    doc = {
        "model_name": "iris",
        "id": str(random.random()),  # differs per answer, like real servers' ids: not compared
        "outputs": [
            {"name": "predict", "shape": [n, 1], "datatype": "INT64",
             "data": classes if flat else [[c] for c in classes]},
            {"name": "predict_proba", "shape": [n, 3], "datatype": "FP64",
             "data": [x for row in proba for x in row] if flat else proba},
        ],
    }  # fmt: skip
    return Answer(status, json.dumps(doc).encode(), 0.01)


def test_identical_models_agree_on_every_row_and_count_rows() -> None:
    """Batches of 1..8 rows, flat against nested data: 100 % item agreement, items = rows."""
    rng = random.Random(1)
    tally = Tally("cmp")
    rows = 0
    for n in range(1, 9):
        classes = [rng.randrange(3) for _ in range(n)]
        rows += n
        c = compare([PREDICT, PROBA], v2(classes), v2(classes, flat=False), protocol=V2)
        assert c.items == (True,) * n
        assert c.agree
        tally.add(c)
    s = summarize(tally.drain()["cmp"])
    assert (s.requests.k, s.requests.n, s.agreement.k, s.agreement.n) == (8, 8, rows, rows)
    assert s.fields["predict"].agreement.n == rows
    assert s.fields["predict"].requests.n == 8


def test_a_constant_candidate_agrees_on_its_label_share_of_rows() -> None:
    """Class 0 always: item agreement is the share of rows whose true class is 0, and the
    confusion matrix counts rows."""
    rng = random.Random(2)
    tally = Tally("cmp")
    zeros = rows = 0
    for _ in range(300):
        classes = [rng.randrange(3) for _ in range(rng.randint(1, 8))]
        zeros, rows = zeros + classes.count(0), rows + len(classes)
        tally.add(compare([PREDICT], v2(classes), v2([0] * len(classes)), protocol=V2))
    f = summarize(tally.drain()["cmp"]).fields["predict"]
    assert (f.agreement.k, f.agreement.n) == (zeros, rows)
    assert sum(count for _, _, count in f.confusion) == rows
    assert {s for _, s, _ in f.confusion} == {"0"}


def test_different_batch_lengths_are_one_shape_disagreement_per_request() -> None:
    """3 rows against 2: one disagreement named shape, not a row-by-row guess."""
    c = compare([PREDICT], v2([0, 1, 2]), v2([0, 1]), protocol=V2)
    assert (c.batch, c.items, c.agree) == ((3, 2), (False,), False)
    assert [(r.reason, r.primary, r.shadow) for r in c.fields] == [("shape", "3 items", "2 items")]
    counters = Tally("cmp")
    counters.add(c)
    s = summarize(counters.drain()["cmp"])
    assert (s.batch_mismatch, s.fields["predict"].shape, s.agreement.n) == (1, 1, 1)


def test_a_failing_shadow_misses_every_row_of_the_primary() -> None:
    """An error answer has no outputs: each of the primary's rows is missing there."""
    failed = Answer(400, b'{"error": "bad"}', 0.01)
    c = compare([PREDICT], v2([1, 2, 0, 1]), failed, protocol=V2)
    assert [r.reason for r in c.fields] == ["missing"] * 4
    assert c.items == (False,) * 4


def test_answers_it_cannot_read_are_not_comparable_never_disagreements() -> None:
    """Binary BF16 outputs: the comparison carries why, and the figures count it apart."""
    tensor = {"name": "predict", "shape": [1], "datatype": "BF16",
              "parameters": {"binary_data_size": 2}}  # fmt: skip
    header = json.dumps({"outputs": [tensor]}).encode()
    c = compare([PREDICT], v2([1]), Answer(200, header + b"\x00\x00", 0.01), protocol=V2)
    assert c.not_comparable == "shadow: outputs 'predict': binary BF16 data is not decoded here"
    tally = Tally("cmp")
    tally.add(c)
    s = summarize(tally.drain()["cmp"])
    assert (s.n, s.agreement.n) == (0, 0)
    assert s.to_dict()["not_comparable"] == {c.not_comparable: 1}


def test_no_field_configured_compares_every_output_of_every_row() -> None:
    """Structural compare per item: the differing row is named, the others agree."""
    c = compare([], v2([0, 1, 2]), v2([0, 2, 2]), protocol=V2)
    assert c.items == (True, False, True)
    assert c.paths == ("item 1: $.predict", "item 1: $.predict_proba[1]",
                       "item 1: $.predict_proba[2]")  # fmt: skip


def test_json_wildcard_items() -> None:
    """`$.predictions[*].label` on a plain JSON API: each element an item."""
    spec = FieldSpec("$.predictions[*].label", "label")
    a = Answer(200, b'{"predictions": [{"label": "a"}, {"label": "b"}, {"label": "c"}]}', 0.0)
    b = Answer(200, b'{"predictions": [{"label": "a"}, {"label": "x"}, {"label": "c"}]}', 0.0)
    assert compare([spec], a, b).items == (True, False, True)


def test_the_compare_id_changes_with_the_config() -> None:
    """Figures are kept per compare id: a field dropped or read another way starts anew."""
    base = compare_id("v2", [PREDICT])
    assert base == compare_id("v2", [FieldSpec("predict", "label")])
    assert base != compare_id("json", [PREDICT])
    assert base != compare_id("v2", [PREDICT, PROBA])


def test_a_field_read_the_wrong_way_gets_a_hint_in_plain_words() -> None:
    """`$.outputs[0].data` on a json route is a list on both sides: the summary says so
    and says what to write instead; a healthy field has no hint."""
    spec = FieldSpec("$.outputs[0].data", "label")
    tally = Tally("cmp")
    for _ in range(20):
        tally.add(compare([spec, FieldSpec("$.model_name", "label")], v2([1, 2]), v2([1, 2])))
    summary = {"shadows": {"v2": summarize(tally.drain()["cmp"]).to_dict()}}
    add_hints(summary, get("json"), {"$.outputs[0].data": "label", "$.model_name": "label"})
    pair = summary["shadows"]["v2"]
    assert pair["fields"]["$.model_name"]["problem"] == ""
    assert pair["fields"]["$.outputs[0].data"]["problem"] == (
        "$.outputs[0].data is a list on both sides (20 of 20 items): $.outputs[0].data looks "
        "like an Open Inference Protocol (V2) tensor: with `protocol: v2` name the tensor "
        "(output: NAME) and every row is an item; or pick one element with [0], or make "
        "each an item with [*]"
    )
    assert pair["problems"] == [
        {"field": "$.outputs[0].data", "why": pair["fields"]["$.outputs[0].data"]["problem"]}
    ]


def test_a_shadow_that_lacks_the_field_gets_a_hint() -> None:
    tally = Tally("cmp")
    for _ in range(10):
        tally.add(compare([PREDICT], v2([1]), Answer(200, b'{"outputs": []}', 0.0), protocol=V2))
    summary = {"shadows": {"v2": summarize(tally.drain()["cmp"]).to_dict()}}
    add_hints(summary, V2, {"predict": "label"})
    assert summary["shadows"]["v2"]["fields"]["predict"]["problem"] == (
        "the shadow's answers lack predict in 10 of 10 items while the other side has it: "
        "do both answer in the same format?"
    )


def test_gzip_answers_are_read_as_items_like_mlserver_sends_them() -> None:
    """MLServer (Starlette's GZipMiddleware, on by default) gzips answers of 500 bytes and
    more whenever the client accepts it, as `requests` always does: both sides are then
    gzip bytes. Found against real MLServer 1.7.1: 21 of 60 requests counted no item
    (iris-v2 172 of 295 rows; the constant candidate's rows 'missing' on the primary)."""
    import gzip
    import zlib

    classes = [0, 2, 1, 1, 0, 2, 2, 0]
    plain = v2(classes)
    for packed in (gzip.compress(plain.body), zlib.compress(plain.body)):  # gzip, deflate
        c = compare([PREDICT, PROBA], v2(classes), Answer(200, packed, 0.01), protocol=V2)
        assert c.items == (True,) * 8
        assert c.agree
        assert not c.errors
        both = compare([PREDICT], Answer(200, packed, 0.01), Answer(200, packed, 0.01), protocol=V2)
        assert both.items == (True,) * 8
    const = compare(
        [PREDICT], Answer(200, gzip.compress(plain.body), 0.01), v2([1] * 8), protocol=V2
    )
    assert len(const.items) == 8
    assert sum(const.items) == classes.count(1)


def test_a_sampled_disagreement_shows_gzip_answers_as_text_and_names_the_row() -> None:
    """`routerctl diffs` of a gzipped MLServer answer printed its compressed bytes
    ('\\x1f\\ufffd\\x08...'), and a batched field's disagreement did not say which row."""
    import gzip

    from router.ops.cli_views import diff_lines
    from router.shadow.records import disagreement_record

    p, s = v2([0, 2, 1]), v2([0, 1, 1])
    packed = gzip.compress(p.body)
    c = compare([PREDICT], Answer(200, packed, 0.01), s, protocol=V2)
    record = json.loads(disagreement_record("r-1", c, packed, s.body))
    assert json.loads(record["primary"])["outputs"][0]["data"] == [0, 2, 1]
    lines = diff_lines([{**record, "backend": "iris-v2"}])
    assert any(
        line.strip().startswith("predict row 1: differs  primary 2  shadow 1") for line in lines
    )
    assert "items 3 compared, 2 agree" in lines[0]
