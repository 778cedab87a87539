"""YAML for config files, with bounds: no input can stall or exhaust the router.

A config file is written by people, but a hot-reloaded file is also an input
that anything with write access to it controls. Three bounds keep the cost of
reading any file small and predictable, each refused with a message that names
the cap:

- size: the bytes read at all (`MAX_BYTES`);
- nesting: libyaml refuses more than 1,000 levels itself; we refuse more than
  `MAX_DEPTH` before constructing anything (the constructor recurses in Python);
- expansion: aliases make a document a graph, so a few KB of nested anchors can
  stand for billions of values (the "billion laughs"). The composed graph is
  measured as the tree it stands for, without building it, and refused past
  `MAX_VALUES`; a recursive alias is refused too.

Composition runs in libyaml's C parser when PyYAML has it (fast, and bounded in
depth), else in PyYAML's own. Construction is PyYAML's safe constructor, with
one change: a key written twice in one mapping is an error (a second
`backends:` must not silently replace the first).
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
MAX_VALUES = 2_000_000

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YAMLRefused(Exception):
    """A document that breaks a bound or is not YAML; the message says where and why."""


class _Loader(_Base):  # type: ignore[misc]
    """The safe loader (libyaml's when present) refusing duplicate keys."""


def _unique_mapping(loader: Any, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *base` then overriding a key is intended
        key = loader.construct_object(key_node)
        if isinstance(key, str | int | float | bool) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}"[:120], key_node.start_mark
            )
        seen.add(key)
    result: dict[Any, Any] = loader.construct_mapping(node)
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _where(source: str, node: yaml.Node) -> str:
    mark = node.start_mark
    return f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source


def measure(root: yaml.Node, source: str) -> int:
    """The number of values the graph stands for as a tree; refuses past the bounds.

    Iterative depth-first walk (no recursion to exhaust) keeping, per distinct
    node, its size and height as a tree: a node shared by many aliases is
    measured once and counted as often as it is used."""
    sizes: dict[int, tuple[int, int]] = {}  # id -> (values, height)
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            below = [sizes[id(child)] for child in _children(node)]
            size = 1 + sum(s for s, _ in below)
            height = 1 + max((h for _, h in below), default=0)
            sizes[key] = (size, height)
            _check(source, node, size, height)
        elif key not in sizes:
            on_path.add(key)
            stack.append((node, True))
            for child in _children(node):
                if id(child) in on_path:
                    raise YAMLRefused(f"{_where(source, child)}: a YAML alias refers to itself")
                if id(child) not in sizes:
                    stack.append((child, False))
    return sizes[id(root)][0]


def _check(source: str, node: yaml.Node, size: int, height: int) -> None:
    if height > MAX_DEPTH:
        raise YAMLRefused(f"{_where(source, node)}: nested deeper than {MAX_DEPTH} levels")
    if size > MAX_VALUES:
        raise YAMLRefused(
            f"{_where(source, node)}: expands to more than {MAX_VALUES:,} values "
            "(YAML aliases repeat what they point to); the cap keeps a config "
            "from exhausting the router"
        )


def load(data: bytes, source: str) -> object:
    """One YAML document as Python values, within the bounds; YAMLRefused otherwise."""
    if len(data) > MAX_BYTES:
        raise YAMLRefused(f"{source}: {len(data):,} bytes, more than the {MAX_BYTES:,} allowed")
    loader = _Loader(data)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        measure(node, source)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise YAMLRefused(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise YAMLRefused(f"{source}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
