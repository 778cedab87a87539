"""The settings of the text kinds under `compare:` (router/core/compare_text.py).

    {output: text, kind: length_ratio, min: 0.5, max: 2}
    {output: text, kind: refusal, patterns: ["(?i)^I can't"]}   # default: compare_text.REFUSALS
    {output: text, kind: json_valid, schema: answer.schema.json} # optional JSON schema file
    {output: text, kind: overlap, min: 0.5}
    {output: finish_reason, kind: finish_reason}
    {output: tool_calls, kind: tool_calls}

Problems go to the error list with their exact config path, like the rest of
the config; a schema file is read, parsed and compiled here, once per load.
"""

from __future__ import annotations

import json
import re
from typing import Any

from router.core.confkit import Node


def text_settings(node: Node, kind: str) -> dict[str, Any]:
    """The keys only this text kind accepts (any other is left for done() to refuse)."""
    if kind == "length_ratio":
        low = node.number("min", 0.5, 0.0, 1e6)
        high = node.number("max", 2.0, 0.0, 1e6)
        if low > high:
            node.error(node.sub("min"), f"must not be above max ({high:g})", node.data.get("min"))
        return {"band": (low, high)}
    if kind == "overlap":
        return {"min_similarity": node.number("min", 0.5, 0.0, 1.0)}
    if kind == "refusal":
        return {"patterns": _patterns(node)}
    if kind == "json_valid":
        return {"schema": _schema(node)}
    return {}


def _patterns(node: Node) -> tuple[str, ...]:
    out: list[str] = []
    listed = node.items("patterns")
    for path, item in listed:
        if not isinstance(item, str) or not item:
            node.error(path, "must be a regular expression", item)
            continue
        try:
            re.compile(item)
        except re.error as exc:
            node.error(path, f"bad regular expression: {exc}", item)
            continue
        out.append(item)
    if node.has("patterns") and not listed:
        node.error(node.sub("patterns"), "must list at least one pattern")
    return tuple(out)


def _schema(node: Node) -> str:
    """The schema file's JSON, canonical text: a changed schema is a new way of comparing."""
    path = node.readable_file("schema")
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            schema = json.load(f)
    except OSError:
        return ""  # readable_file said why
    except ValueError as exc:
        node.error(node.sub("schema"), f"is not a JSON file: {exc}", path)
        return ""
    import fastjsonschema  # late: only a schema needs it

    try:
        fastjsonschema.compile(schema)
    except (fastjsonschema.JsonSchemaDefinitionException, TypeError, ValueError) as exc:
        node.error(node.sub("schema"), f"is not a JSON schema this router can use: {exc}", path)
        return ""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))
