"""Do a route's compared and watched names fit its protocol? Errors and warnings.

Errors (the config is refused): a name the protocol cannot read at all, such
as `output: predict` on a `json` route, or a bad JSON path. Warnings
(`routerctl validate` prints them, the config is accepted): a name that reads,
but probably not as meant, such as `field: $.outputs[0].data` on a `json`
route (a V2 answer: one list per request instead of one item per row), or a
JSON path on a `v2` route. Both name the exact config path.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from router.config.spec import Config, RouteSpec
from router.core.protocols import get


def named(route: RouteSpec, raw: Mapping[str, Any], where: str) -> Iterator[tuple[str, str, str]]:
    """(config path, name, role) of every name the route compares or watches; `raw`
    is the route's mapping as written (for the index of each compare entry)."""
    word = route.strategy_kind
    block = raw.get("strategy", {}).get(word, {}) if isinstance(raw.get("strategy"), dict) else {}
    written = block.get("compare") if isinstance(block, dict) else None
    entries = written if isinstance(written, list) else []
    for spec in getattr(route.strategy, "compare", ()):
        yield _compare_path(where, word, entries, spec.field), spec.field, "output"
    if route.drift is not None:
        for role, names in (("input", route.drift.inputs), ("output", route.drift.outputs)):
            for i, name in enumerate(names):
                yield f"{where}.drift.{role}s[{i}]", name, role


def _compare_path(where: str, word: str, entries: list[Any], name: str) -> str:
    for j, entry in enumerate(entries):
        if isinstance(entry, dict):
            for key in ("field", "output"):
                if entry.get(key) == name:
                    return f"{where}.strategy.{word}.compare[{j}].{key}"
    return f"{where}.strategy.{word}.analysis"  # a gate's field, compared as a label


def errors(route: RouteSpec, raw: Mapping[str, Any], where: str) -> list[str]:
    """Names the route's protocol cannot read, each with its config path."""
    protocol = get(route.protocol)
    out = []
    for path, name, _ in named(route, raw, where):
        if why := protocol.check(name):
            out.append(f"{path}: {why} (protocol {route.protocol}), got {name!r}")
    return out


def warnings(config: Config, raw: Mapping[str, Any]) -> list[str]:
    """Names that read, but probably not as meant (see the module docstring)."""
    found = raw.get("routes")
    routes: list[Any] = found if isinstance(found, list) else []
    by_name = {r.get("name"): (i, r) for i, r in enumerate(routes) if isinstance(r, dict)}
    out = []
    for route in config.routes:
        i, written = by_name.get(route.name, (0, {}))
        protocol = get(route.protocol)
        for path, name, role in named(route, written, f"routes[{i}]"):
            if advice := protocol.advice(name, role):
                out.append(f"{path}: {advice}")
    return out
