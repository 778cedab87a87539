"""`protocol: json` (the default): items picked out of any JSON API by paths.

Every name is a JSON path. A path without a wildcard is one item per body
(`$.label`: one prediction a request, as before protocols existed); a `[*]`
makes each element an item (`$.predictions[*].label`: one per element, with
MISSING kept where an element lacks the field, so two paths of one route stay
aligned item by item). With no names, an answer is one item: the whole
document, compared structurally.

Every call is an inference call: a plain JSON API has no metadata paths we
could tell apart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from router.core.jsonpath import MISSING
from router.core.protocols.base import (
    NOT_JSON,
    Items,
    inflate,
    loads,
    path_check,
    paths_only,
)

_V2_LIKE: Final = re.compile(r"^\$\.(outputs|inputs)\[\d+\]")
_TFS_LIKE: Final = re.compile(r"^\$\.(predictions|instances)(\[\d+\])?$")


class JsonPaths:
    word = "json"

    def inference(self, method: bytes, target: bytes) -> bool:
        return True

    def check(self, name: str) -> str:
        if not name.startswith("$"):
            return (
                f"protocol json reads JSON paths such as $.{name}; a bare name is a tensor "
                "or output of protocol v2 or tfserving"
            )
        return path_check(name)

    def advice(self, name: str, role: str) -> str:
        if _V2_LIKE.match(name):
            side = "output" if name.startswith("$.outputs") else "input"
            return (
                f"{name} looks like an Open Inference Protocol (V2) tensor: with "
                f"`protocol: v2` name the tensor ({side}: NAME) and every row is an item"
            )
        if _TFS_LIKE.match(name):
            return (
                f"{name} looks like a TF Serving batch: with `protocol: tfserving` each "
                "instance is an item (or write [*] to make each element one)"
            )
        return ""

    def request_items(self, body: bytes, names: Sequence[str]) -> Items:
        body = inflate(body)
        doc = loads(body)
        problem = NOT_JSON if body and not _decoded(doc) else ""
        return Items(paths_only(doc, names), problem)

    def answer_items(self, body: bytes, names: Sequence[str] | None) -> Items:
        body = inflate(body)
        doc = loads(body)
        if not _decoded(doc):
            return Items({}, NOT_JSON)
        if names is None:
            return Items({"$": [doc]})
        return Items(paths_only(doc, names))


def _decoded(doc: object) -> bool:
    return doc is not MISSING


JSON: Final = JsonPaths()
