"""Why a comparison cannot work, in plain words next to the field.

A compared field whose values are mostly `type`, `missing` or `shape`
disagreements is not telling anything about the models: it is read the wrong
way. `add_hints` looks at a route's summed figures (router/shadow/stored.py
`read_summary`) and writes, per field, what it sees and what to change, e.g.

    $.outputs[0].data is a list on both sides (600 of 600 items): use
    `protocol: v2` with `output: NAME`, or [0] / [*]

The facts come from the counters (which types were seen, which side lacked the
field); the advice is the route protocol's own (`ModelProtocol.advice`), so
nothing here knows a protocol by name. Pure: dicts in, the same dicts out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from router.core.protocols import ModelProtocol

MIN_ITEMS: Final = 5  # below this a share says nothing yet


def add_hints(summary: dict[str, Any], protocol: ModelProtocol, kinds: Mapping[str, str]) -> None:
    """Give every field of every pair a `problem` ("" when fine) and every pair a
    `problems` list ({field, why}); also says why requests were not comparable."""
    for pair in [*summary.get("shadows", {}).values(), summary.get("secondary") or {}]:
        if not pair:
            continue
        problems = []
        for name, f in pair.get("fields", {}).items():
            f["problem"] = field_problem(name, f, protocol, kinds.get(name, ""))
            if f["problem"]:
                problems.append({"field": name, "why": f["problem"]})
        for why, count in (pair.get("not_comparable") or {}).items():
            problems.append({"field": "", "why": f"{count} requests not comparable: {why}"})
        if pair.get("batch_mismatch"):
            n = pair["batch_mismatch"]
            problems.append(
                {"field": "", "why": f"{n} requests had not as many items on both sides"}
            )
        pair["problems"] = problems


def field_problem(name: str, f: Mapping[str, Any], protocol: ModelProtocol, kind: str) -> str:
    """One field's hint, or "" when its figures look like a real comparison."""
    n = int((f.get("agreement") or {}).get("n") or 0)
    absent = int(f.get("absent") or 0)
    if n == 0:
        return _absent(name, absent, protocol) if absent else ""
    missing, shape = int(f.get("missing") or 0), int(f.get("shape") or 0)
    types = int(f.get("type_errors") or 0) - shape
    if n < MIN_ITEMS or 2 * (missing + types + shape) <= n:
        return ""
    if types >= missing and types >= shape:
        return _types(name, f, n, protocol, kind)
    if missing >= shape:
        lacking = "shadow's" if 2 * int(f.get("missing_shadow") or 0) >= missing else "primary's"
        return (
            f"the {lacking} answers lack {name} in {missing} of {n} items while the other "
            "side has it: do both answer in the same format?"
        )
    return (
        f"{name}: the two sides held lists of different lengths in {shape} of {n} items "
        "(or not as many items): compare it another way, or check the outputs"
    )


def _absent(name: str, requests: int, protocol: ModelProtocol) -> str:
    advice = protocol.advice(name, "output")
    head = f"{name} was in neither answer ({requests} requests): check the name"
    return f"{head}; {advice}" if advice else head


def _types(name: str, f: Mapping[str, Any], n: int, protocol: ModelProtocol, kind: str) -> str:
    cells = f.get("types") or []
    p, s, count = cells[0] if cells else ("?", "?", 0)
    seen = (
        f"a {p} on both sides"
        if p == s
        else f"a {p} in the primary's answers, a {s} in the shadow's"
    )
    head = f"{name} is {seen} ({count} of {n} items)"
    advice = protocol.advice(name, "output")
    if p == s == "list" and kind in ("label", "number"):
        if advice:
            return f"{head}: {advice}; or pick one element with [0], or make each an item with [*]"
        if name.startswith("$"):
            tail = "pick one element with [0], make each an item with [*], or use kind vector"
            return f"{head}: {tail}"
        return f"{head}: each item holds several values; compare them as kind vector or probs"
    return f"{head}: kind {kind or '?'} cannot compare them" + (f"; {advice}" if advice else "")
