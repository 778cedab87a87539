"""YAML for config files, with bounds: no input can stall or exhaust the router.

A config file is written by people, but a hot-reloaded file is also an input
that anything with write access to it controls. Three bounds keep the cost of
reading any file small and predictable, each refused with a message that names
the cap:

- size: the bytes read at all (`MAX_BYTES`);
- values: a first pass over the event stream (nothing kept) counts the values
  and the nesting, refused past `MAX_VALUES` and `MAX_DEPTH` (libyaml stops at
  1,000 levels itself; the constructor recurses in Python) before any node is
  built;
- expansion: aliases make a document a graph, so a few KB of nested anchors can
  stand for billions of values (the "billion laughs"). A document with aliases
  is composed (no more nodes than the first pass counted) and measured as the
  tree it stands for, without building that tree, against the same bounds; a
  recursive alias is refused too.

Composition runs in libyaml's C parser when PyYAML has it (fast, and bounded in
depth), else in PyYAML's own. Construction is PyYAML's safe constructor, with
one change: a key written twice in one mapping is an error (a second
`backends:` must not silently replace the first).
"""

from __future__ import annotations

from typing import Any

import yaml

from router.config import yamlbuild

MAX_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64
MAX_VALUES = 1_000_000  # a 10,000-route config has about 170,000

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
        if isinstance(key, list | dict | set):
            raise yaml.constructor.ConstructorError(
                None, None, "found unhashable key", key_node.start_mark
            )  # PyYAML's own message, instead of a TypeError below
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


def _where(source: str, node: yaml.Node | yaml.Event) -> str:
    mark = node.start_mark
    return f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source


def survey(data: bytes, source: str) -> bool:
    """Count the document's values from its event stream, before anything is built;
    True when it uses aliases (then the composed graph must be measured as well).

    Events are streamed, not kept: a file of a million tiny values is refused at
    the cost of reading it, not of a million Python objects."""
    loader = _Loader(data)
    try:
        count, depth, aliases = 0, 0, False
        while (event := loader.get_event()) is not None:
            if isinstance(event, yaml.AliasEvent):
                aliases = True
            elif isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent):
                count += 1
                depth += isinstance(event, yaml.CollectionStartEvent)
                if depth > MAX_DEPTH or count > MAX_VALUES:
                    _check(source, event, count, depth)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return aliases
    finally:
        loader.dispose()


def measure(root: yaml.Node, source: str) -> int:
    """The number of values a graph with shared parts stands for as a tree.

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


def _check(source: str, node: yaml.Node | yaml.Event, size: int, height: int) -> None:
    if height > MAX_DEPTH:
        raise YAMLRefused(f"{_where(source, node)}: nested deeper than {MAX_DEPTH} levels")
    if size > MAX_VALUES:
        raise YAMLRefused(
            f"{_where(source, node)}: holds more than {MAX_VALUES:,} values, counting "
            "each repeat of a YAML alias; the cap keeps a config from exhausting the router"
        )


def load(data: bytes, source: str) -> object:
    """One YAML document as Python values, within the bounds; YAMLRefused otherwise.

    Built from the event stream in one pass (router/config/yamlbuild.py); the few
    documents that builder leaves alone take PyYAML's path (`load_composed`)."""
    if len(data) > MAX_BYTES:
        raise YAMLRefused(f"{source}: {len(data):,} bytes, more than the {MAX_BYTES:,} allowed")
    loader = _Loader(data)
    try:
        return yamlbuild.Builder(loader, MAX_VALUES, MAX_DEPTH).document()
    except yamlbuild.Unhandled:
        pass
    except yamlbuild.Refused as exc:
        raise _bound(source, exc) from None
    except yaml.YAMLError as exc:
        raise _refusal(source, exc) from None
    finally:
        loader.dispose()
    return load_composed(data, source)


def _bound(source: str, exc: yamlbuild.Refused) -> YAMLRefused:
    where = _where(source, exc.event)
    if exc.what == "itself":
        return YAMLRefused(f"{where}: a YAML alias refers to itself")
    if exc.what == "depth":
        return YAMLRefused(f"{where}: nested deeper than {MAX_DEPTH} levels")
    return YAMLRefused(
        f"{where}: holds more than {MAX_VALUES:,} values, counting each repeat of a "
        "YAML alias; the cap keeps a config from exhausting the router"
    )


def load_composed(data: bytes, source: str) -> object:
    """PyYAML's path: count the events, compose the graph, measure it, construct."""
    try:
        aliases = survey(data, source)
        loader = _Loader(data)
    except yaml.YAMLError as exc:
        raise _refusal(source, exc) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if aliases:
            measure(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _refusal(source, exc) from None
    finally:
        loader.dispose()


def _refusal(source: str, exc: yaml.YAMLError) -> YAMLRefused:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        return YAMLRefused(f"{where}: invalid YAML: {exc.problem or exc.context}")
    return YAMLRefused(f"{source}: invalid YAML: {exc}")
