"""Model protocols: bodies in, items out (router/core/protocols/), pure and faithful to
what MLServer, Triton, TF Serving and plain JSON APIs send."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from router.config.checks import errors, warnings
from router.config.reader import parse
from router.core.jsonpath import MISSING
from router.core.protocols import PROTOCOLS, get

V2 = get("v2")
TFS = get("tfserving")
JSON = get("json")


def body(doc: object) -> bytes:
    return json.dumps(doc).encode()


def v2_answer(*tensors: dict[str, object]) -> bytes:
    return body({"model_name": "iris", "id": "1", "parameters": {}, "outputs": list(tensors)})


# -- v2 ------------------------------------------------------------------------------------
def test_v2_rows_are_the_first_dimension_nested_or_flat() -> None:
    """shape [3, 2] nested or flat row-major gives the same three rows of two values."""
    nested = v2_answer({"name": "p", "shape": [3, 2], "datatype": "FP32",
                        "data": [[1, 2], [3, 4], [5, 6]]})  # fmt: skip
    flat = v2_answer({"name": "p", "shape": [3, 2], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]})
    for answer in (nested, flat):
        items = V2.answer_items(answer, ["p"])
        assert items.columns == {"p": [[1, 2], [3, 4], [5, 6]]}
        assert items.count == 3


def test_v2_a_row_of_one_value_is_that_value() -> None:
    """MLServer answers sklearn's predict as shape [N, 1]: each row is its label."""
    answer = v2_answer({"name": "predict", "shape": [4, 1], "datatype": "INT64",
                        "parameters": {"content_type": "np"}, "data": [0, 2, 1, 2]})  # fmt: skip
    assert V2.answer_items(answer, ["predict"]).columns == {"predict": [0, 2, 1, 2]}
    one_dim = v2_answer({"name": "predict", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]})
    assert V2.answer_items(one_dim, ["predict"]).columns == {"predict": ["a", "b"]}


def test_v2_tensors_by_name_and_missing_ones_are_empty() -> None:
    """Outputs are found by name whatever their order; an unknown name has no items;
    with no names every output comes back."""
    answer = v2_answer(
        {"name": "proba", "shape": [2, 3], "datatype": "FP64", "data": [0.1, 0.2, 0.7] * 2},
        {"name": "predict", "shape": [2], "datatype": "INT64", "data": [2, 2]},
    )
    items = V2.answer_items(answer, ["predict", "nope"])
    assert items.columns == {"predict": [2, 2], "nope": []}
    assert set(V2.answer_items(answer, None).columns) == {"proba", "predict"}


def test_v2_data_that_does_not_fit_its_shape_is_a_problem_with_the_tensor_named() -> None:
    """5 values for shape [3, 2]: the answer has no items, and the problem says why."""
    bad = v2_answer({"name": "p", "shape": [3, 2], "datatype": "FP32", "data": [1, 2, 3, 4, 5]})
    items = V2.answer_items(bad, ["p"])
    assert (items.columns, items.problem) == ({}, "outputs 'p': 5 values for shape [3, 2]")
    assert items.unreadable == ""


def test_v2_error_answers_and_garbage() -> None:
    """An error answer has no outputs (no items, no problem); garbage is not JSON."""
    assert V2.answer_items(body({"error": "bad input"}), ["predict"]).columns == {"predict": []}
    assert V2.answer_items(b"<html>oops", ["predict"]).problem == "not JSON"


def test_v2_binary_data_extension_is_decoded() -> None:
    """A JSON header then raw little-endian bytes (tritonclient's default): FP32 and BYTES
    tensors are read from their binary_data_size slices, in tensor order."""
    header = body({"outputs": [
        {"name": "score", "shape": [2, 1], "datatype": "FP32",
         "parameters": {"binary_data_size": 8}},
        {"name": "label", "shape": [2], "datatype": "BYTES",
         "parameters": {"binary_data_size": 14}},
    ]})  # fmt: skip
    tail = np.array([0.5, 1.5], dtype="<f4").tobytes()
    tail += struct.pack("<I", 6) + b"setosa" + struct.pack("<I", 0)
    items = V2.answer_items(header + tail, ["score", "label"])
    assert items.columns == {"score": [0.5, 1.5], "label": ["setosa", ""]}


def test_v2_binary_data_it_cannot_decode_is_unreadable_not_a_problem() -> None:
    """BF16 bytes are not decoded here: the body is not comparable, with the reason."""
    header = body({"outputs": [{"name": "x", "shape": [2], "datatype": "BF16",
                                "parameters": {"binary_data_size": 4}}]})  # fmt: skip
    items = V2.answer_items(header + b"\x00\x01\x02\x03", ["x"])
    assert items.unreadable == "outputs 'x': binary BF16 data is not decoded here"
    assert items.problem == ""


def test_v2_request_inputs_for_drift() -> None:
    """Inputs are read like outputs: one row of features per item."""
    tensor = {"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": list(range(1, 9))}
    request = body({"inputs": [tensor], "parameters": {"x": 1}})
    items = V2.request_items(request, ["input-0"])
    assert items.rows(["input-0"]) == [([1, 2, 3, 4],), ([5, 6, 7, 8],)]


@pytest.mark.parametrize(
    ("method", "target", "judged"),
    [
        (b"POST", b"/v2/models/iris/infer", True),
        (b"POST", b"/v2/models/iris/versions/3/infer", True),
        (b"POST", b"/v2/models/iris/infer?trace=1", True),
        (b"GET", b"/v2/models/iris", False),
        (b"GET", b"/v2/models/iris/versions/3", False),
        (b"GET", b"/v2/models/iris/ready", False),
        (b"GET", b"/v2/health/ready", False),
        (b"POST", b"/v2/repository/index", False),
    ],
)
def test_v2_only_infer_calls_are_judged(method: bytes, target: bytes, judged: bool) -> None:
    """Metadata, readiness and health pass through without being compared or observed."""
    assert V2.inference(method, target) is judged


# -- tfserving ------------------------------------------------------------------------------
def test_tfserving_row_format_each_instance_an_item() -> None:
    """Named outputs per prediction object; a plain list is the unnamed `predictions`."""
    named = body({"predictions": [{"classes": 1, "scores": [0.1, 0.9]}, {"classes": 0}]})
    assert TFS.answer_items(named, ["classes", "scores"]).columns == {
        "classes": [1, 0],
        "scores": [[0.1, 0.9], MISSING],
    }
    plain = body({"predictions": [[0.2, 0.8], [0.6, 0.4]]})
    assert TFS.answer_items(plain, ["predictions"]).columns == {
        "predictions": [[0.2, 0.8], [0.6, 0.4]]
    }


def test_tfserving_columnar_format() -> None:
    """`outputs` by name with the batch first, or one unnamed list (called either way)."""
    answer = body({"outputs": {"classes": [2, 1], "scores": [[0, 0, 1], [0, 1, 0]]}})
    assert TFS.answer_items(answer, ["classes"]).columns == {"classes": [2, 1]}
    unnamed = body({"outputs": [3, 4, 5]})
    assert TFS.answer_items(unnamed, ["outputs"]).columns == {"outputs": [3, 4, 5]}
    assert TFS.answer_items(unnamed, ["predictions"]).columns == {"predictions": [3, 4, 5]}


def test_tfserving_requests_rows_and_columns_and_b64() -> None:
    """`instances` rows or `inputs` columns give the same items; {"b64"} is a value."""
    rows = TFS.request_items(body({"instances": [{"x": [1, 2]}, {"x": [3, 4]}]}), ["x"])
    cols = TFS.request_items(body({"inputs": {"x": [[1, 2], [3, 4]]}}), ["x"])
    assert rows.columns == cols.columns == {"x": [[1, 2], [3, 4]]}
    b64 = TFS.request_items(body({"instances": [{"b64": "aGk="}]}), ["instances"])
    assert b64.columns == {"instances": [{"b64": "aGk="}]}


def test_tfserving_only_predict_calls_are_judged() -> None:
    assert TFS.inference(b"POST", b"/v1/models/iris:predict")
    assert TFS.inference(b"POST", b"/v1/models/iris/versions/2:predict")
    assert TFS.inference(b"POST", b"/v1/models/iris/labels/canary:predict")
    assert not TFS.inference(b"GET", b"/v1/models/iris")
    assert not TFS.inference(b"GET", b"/v1/models/iris/metadata")
    assert not TFS.inference(b"POST", b"/v1/models/iris:classify")


# -- json -------------------------------------------------------------------------------------
def test_json_wildcard_makes_items_and_keeps_them_aligned() -> None:
    """`[*]` gives one item per element, MISSING where an element lacks the field; a
    path without a wildcard is one item; a missing path none."""
    answer = body({"predictions": [{"label": "a", "p": 0.9}, {"p": 0.5}], "label": "x"})
    items = JSON.answer_items(answer, ["$.predictions[*].label", "$.label", "$.nope"])
    assert items.columns == {"$.predictions[*].label": ["a", MISSING], "$.label": ["x"],
                             "$.nope": []}  # fmt: skip
    assert items.count == 2
    assert JSON.answer_items(answer, None).columns == {"$": [json.loads(answer)]}


def test_every_protocol_is_registered_under_its_word() -> None:
    assert {word: p.word for word, p in PROTOCOLS.items()} == {
        "json": "json",
        "v2": "v2",
        "tfserving": "tfserving",
        "openai": "openai",
    }


# -- config: names that do not fit the protocol ------------------------------------------------
def route_yaml(protocol: str, compare: str, drift: str = "") -> str:
    return (
        "backends:\n  a: {url: http://127.0.0.1:1}\n  b: {url: http://127.0.0.1:2}\n"
        "routes:\n  - name: iris\n    match: {path_prefix: /}\n"
        f"    protocol: {protocol}\n{drift}"
        f"    strategy:\n      shadow: {{primary: a, shadows: [b], compare: [{compare}]}}\n"
    )


def test_output_names_on_a_json_route_are_refused_with_their_path() -> None:
    """protocol json reads JSON paths: `output: predict` cannot work there."""
    from router.core.confkit import ConfigError

    with pytest.raises(ConfigError) as info:
        parse(route_yaml("json", "{output: predict, kind: label}"))
    assert info.value.errors == [
        "routes[0].strategy.shadow.compare[0].output: protocol json reads JSON paths such as "
        "$.predict; a bare name is a tensor or output of protocol v2 or tfserving "
        "(protocol json), got 'predict'"
    ]


def test_validate_warns_when_a_name_reads_but_not_as_meant() -> None:
    """A V2 answer read by JSON path on a json route, and a JSON path on a v2 route,
    are accepted with a warning naming the exact place."""
    text = route_yaml("json", "{field: '$.outputs[0].data', kind: label}")
    config = parse(text)
    import yaml

    assert warnings(config, yaml.safe_load(text)) == [
        "routes[0].strategy.shadow.compare[0].field: $.outputs[0].data looks like an Open "
        "Inference Protocol (V2) tensor: with `protocol: v2` name the tensor (output: NAME) "
        "and every row is an item"
    ]
    drift = "    drift: {inputs: [$.inputs], outputs: [predict]}\n"
    text = route_yaml("v2", "{output: predict, kind: label}", drift)
    found = warnings(parse(text), yaml.safe_load(text))
    assert found == [
        "routes[0].drift.inputs[0]: $.inputs is a JSON path: on a v2 route it is read once per "
        "request, not per row; name the tensor instead (input: NAME) to judge every row"
    ]
    assert errors(parse(text).routes[0], yaml.safe_load(text)["routes"][0], "routes[0]") == []


def test_unknown_protocol_word_is_refused() -> None:
    from router.core.confkit import ConfigError

    with pytest.raises(ConfigError) as info:
        parse(route_yaml("grpc", "{field: $.label, kind: label}"))
    assert info.value.errors == [
        "routes[0].protocol: must be one of json, v2, tfserving, openai, got 'grpc'"
    ]


def test_routerctl_validate_prints_ok_then_the_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config that reads but not as meant: exit 0, OK, then each warning with its path."""
    from router.ops.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(route_yaml("json", "{field: '$.predictions[0]', kind: label}"))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"OK: {path}"
    assert out[1].startswith("warning: routes[0].strategy.shadow.compare[0].field: ")
    assert "protocol: tfserving" in out[1]


def test_gzip_and_deflate_bodies_are_inflated_for_every_protocol() -> None:
    """A body compressed by the server (Content-Encoding: gzip or deflate, as MLServer
    answers a client that accepts it) or by the client (tritonclient's
    request_compression_algorithm) reads as the same items; a body that inflates
    beyond the bound is not JSON, never a memory blow-up."""
    import gzip
    import zlib

    from router.core.protocols.base import MAX_INFLATED, inflate

    answer = v2_answer({"name": "p", "shape": [3, 1], "datatype": "INT64", "data": [0, 2, 1]})
    request = body({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64",
                                "data": [1, 2, 3, 4]}]})  # fmt: skip
    tfs = body({"predictions": [{"classes": 1}, {"classes": 0}]})
    for pack in (gzip.compress, zlib.compress):
        assert V2.answer_items(pack(answer), ["p"]).columns == {"p": [0, 2, 1]}
        assert V2.request_items(pack(request), ["x"]).columns == {"x": [[1, 2], [3, 4]]}
        assert TFS.answer_items(pack(tfs), ["classes"]).columns == {"classes": [1, 0]}
        assert JSON.answer_items(pack(tfs), ["$.predictions[*].classes"]).count == 2
    bomb = gzip.compress(b" " * (MAX_INFLATED + 1))
    assert inflate(bomb) == bomb
    assert V2.answer_items(bomb, ["p"]).problem
    assert inflate(b'{"a": 1}') == b'{"a": 1}'
