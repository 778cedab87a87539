"""The `compare:` list of a shadow or a canary: config in, `FieldSpec`s out.

Each entry names what to compare, `field: $.path` (a JSON path) or `output:
NAME` (a name of the route's protocol: a V2 tensor, a TF Serving output), and
its kind with the kind's own settings, and optionally `name:`, the name its
figures are kept and shown under (default: the field; a text kind's default
is the kind, `refusal`, so one `output: text` can be judged by several kinds).
Problems go to the error list with their exact config path, like every other
part of the config.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from router.core.compare_kinds import KINDS, METRICS, FieldSpec
from router.core.compare_text import TEXT_KINDS
from router.core.compare_text_config import text_settings
from router.core.confkit import Node
from router.core.jsonpath import compile_path


def parse_compare(items: Sequence[tuple[str, object]], errors: list[str]) -> tuple[FieldSpec, ...]:
    """Read a `compare:` list (the (path, item) pairs of `Node.items`); problems go
    to `errors` with their exact path. Shared by shadow and the canary's gate."""
    out: list[FieldSpec] = []
    seen: set[str] = set()
    for path, item in items:
        if not isinstance(item, dict):
            errors.append(f"{path}: must be a mapping like {{field: $.label, kind: label}}")
            continue
        node = Node(item, path, errors)
        spec = _field_spec(node)
        node.done()
        if spec is None:
            continue
        if spec.key in seen:
            _twice(node, spec)
            continue
        seen.add(spec.key)
        out.append(spec)
    return tuple(out)


def _twice(node: Node, spec: FieldSpec) -> None:
    if spec.key == spec.field:
        key = "field" if node.has("field") else "output"
        node.error(node.sub(key), "is compared twice", spec.field)
        return
    where = node.sub("name") if node.has("name") else node.sub("kind")
    why = f"figures named {spec.key!r} twice: give one of these entries its own `name:`"
    node.error(where, why)


def _field_spec(node: Node) -> FieldSpec | None:
    name = compared_name(node)
    kind = node.choice("kind", "", KINDS)
    if not node.has("kind"):
        node.error(node.sub("kind"), f"is required, one of {', '.join(KINDS)}")
    settings = _settings(node, kind)  # read even when invalid, so done() flags no known key
    label = node.string("name", kind if kind in TEXT_KINDS else "")
    return FieldSpec(name, kind, name=label, **settings) if name and kind else None


def compared_name(node: Node) -> str:
    """`field: $.path` (a JSON path) or `output: NAME` (a name of the route's
    protocol, e.g. a V2 tensor), exactly one; "" after an error. Whether the
    protocol can read it is checked per route (router/config/checks.py)."""
    has_field, has_output = node.has("field"), node.has("output")
    if has_field == has_output:
        node.raw("field")
        node.raw("output")
        node.error(node.path, "needs exactly one of field (a JSON path) or output (a name)")
        return ""
    if has_output:
        name = node.string("output", required=True)
        if name.startswith("$"):
            node.error(node.sub("output"), "is a JSON path: write it as field", name)
            return ""
        return name
    text = node.string("field", required=True)
    return text if text and _path_ok(node, text) else ""


def _settings(node: Node, kind: str) -> dict[str, Any]:
    """The keys only this kind accepts; any other key is left for done() to refuse."""
    if kind == "number":
        return {
            "abs_tol": read_real(node, "abs", 0.0, 0.0, math.inf),
            "rel_tol": read_real(node, "rel", 0.0, 0.0, math.inf),
        }
    if kind in TEXT_KINDS:
        return text_settings(node, kind)
    if kind != "vector":
        return {}
    metric = node.choice("metric", "max_abs", METRICS)
    if metric == "cosine":
        return {
            "metric": metric,
            "min_similarity": read_real(node, "min_similarity", 0.99, -1.0, 1.0),
        }
    return {"metric": metric, "tol": read_real(node, "tol", 0.0, 0.0, math.inf)}


def read_real(node: Node, key: str, default: float, lo: float, hi: float) -> float:
    """`Node.number` that also takes `1e-6`: YAML 1.1 reads an exponent without a
    dot as a string, and tolerances are exactly where people write one."""
    value = node.data.get(key)
    if not isinstance(value, str):
        return node.number(key, default, lo, hi)
    node.raw(key)
    try:
        number = float(value)
    except ValueError:
        number = math.nan  # fails the range check below
    if lo <= number <= hi:
        return number
    node.error(node.sub(key), f"must be a number in {lo:g}..{hi:g}", value)
    return default


def _path_ok(node: Node, text: str) -> bool:
    try:
        compile_path(text)
    except ValueError as exc:
        node.error(node.sub("field"), f"bad JSONPath: {exc}", text)
        return False
    return True
