"""`protocol: tfserving`: TensorFlow Serving's REST predict API.

    POST .../v1/models/NAME[/versions/V | /labels/L]:predict
    row format      {"instances": [row, row, ...]}  ->  {"predictions": [row, ...]}
    columnar format {"inputs": {name: [batch...]}}  ->  {"outputs": {name: [batch...]}}

Each instance is one item. A row that is an object holds named inputs (or
outputs): `{"x": [...], "mask": [...]}`; any other row is the value of the one
unnamed input (output), which is called `instances` (`predictions`) whichever
format the body uses (`inputs` and `outputs` name it too). Columnar values have
the batch as first dimension; a value that is not a list is one item.
`{"b64": "..."}` is a value, not a named input. `signature_name` and the
`:classify`/`:regress` APIs are not read: only `:predict` calls are judged;
metadata (`GET /v1/models/NAME[/metadata]`) passes through.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

from router.core.jsonpath import MISSING
from router.core.protocols.base import NOT_JSON, Items, inflate, loads, path_check, path_column

_PREDICT: Final = re.compile(
    rb"/v1/models/[^/?:]+(?:/versions/[^/?:]+|/labels/[^/?:]+)?:predict(?:\?.*)?$"
)
# (row key, columnar key): the unnamed tensor is called by the row key
_REQUEST: Final = ("instances", "inputs")
_ANSWER: Final = ("predictions", "outputs")


class TfServing:
    word = "tfserving"

    def inference(self, method: bytes, target: bytes) -> bool:
        return method == b"POST" and _PREDICT.search(target) is not None

    def check(self, name: str) -> str:
        if name.startswith("$"):
            return path_check(name)
        return "" if name.strip() else "must name an input or output"

    def advice(self, name: str, role: str) -> str:
        if not name.startswith("$"):
            return ""
        unnamed = "predictions" if role == "output" else "instances"
        return (
            f"{name} is a JSON path: on a tfserving route it is read once per request, not "
            f"per instance; name the {role} instead ({role}: NAME, or {unnamed} when the "
            "model has a single unnamed one)"
        )

    def request_items(self, body: bytes, names: Sequence[str]) -> Items:
        return read(inflate(body), _REQUEST, names)

    def answer_items(self, body: bytes, names: Sequence[str] | None) -> Items:
        return read(inflate(body), _ANSWER, names)


def read(body: bytes, keys: tuple[str, str], names: Sequence[str] | None) -> Items:
    doc = loads(body)
    if doc is MISSING:
        return Items({}, NOT_JSON)
    table = columns(doc, keys)
    if names is None:
        return Items(table)
    out: dict[str, Sequence[object]] = {}
    for n in names:
        if n.startswith("$"):
            out[n] = path_column(doc, n)
        else:
            out[n] = table.get(keys[0] if n == keys[1] and n not in table else n, [])
    return Items(out)


def columns(doc: object, keys: tuple[str, str]) -> dict[str, list[object]]:
    """name -> one value per instance, from the row or the columnar format."""
    if not isinstance(doc, dict):
        return {}
    row_key, col_key = keys
    if isinstance(doc.get(row_key), list):
        return _from_rows(doc[row_key], row_key)
    if col_key in doc:
        return _from_columns(doc[col_key], row_key)
    return {}  # an error answer ({"error": ...}) has no items


def _named(value: object) -> bool:
    return isinstance(value, dict) and set(value) != {"b64"}


def _from_rows(rows: list[object], unnamed: str) -> dict[str, list[object]]:
    if not rows or not all(_named(r) for r in rows):
        return {unnamed: list(rows)}
    names = list(dict.fromkeys(k for r in rows if isinstance(r, dict) for k in r))
    return {n: [r.get(n, MISSING) if isinstance(r, dict) else MISSING for r in rows] for n in names}


def _from_columns(value: object, unnamed: str) -> dict[str, list[object]]:
    if not _named(value):
        return {unnamed: _batch(value)}
    assert isinstance(value, Mapping)
    return {str(n): _batch(v) for n, v in value.items()}


def _batch(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else [value]


TFSERVING: Final = TfServing()
