"""Python values straight from libyaml's event stream, within the bounds, in one pass.

PyYAML's own path composes a node graph and then constructs values from it in
Python, recursively and node by node: about 5 s for a 10,000-route config (2 MB)
on this project's 2-core machine, where the events alone take 0.5 s. This module
builds the same values as the events arrive, with no graph:

- plain scalars are resolved (int, bool, null, float, timestamp, ...) by the
  loader's own resolver and constructor, once per distinct text: a config repeats
  its scalars (weights, durations, backend names), so most are dictionary hits;
- the bounds are checked as values arrive: `MAX_VALUES` counts every value, an
  alias counting as the whole value it repeats (sizes are kept per anchor), and
  `MAX_DEPTH` the nesting, an alias adding the height of what it repeats. An
  alias to a collection that is still open refers to itself: refused;
- a key written twice in one mapping is an error (`<<` too); a merge key (`<<`)
  merges a mapping or a list of them, the first of a list winning as the YAML
  merge spec says (PyYAML 6.0.4 lets the last win unless the key is one
  character long), and the mapping's own keys win over merged ones.

What it does not handle (a tagged collection such as `!!set`, a collection used
as a key) raises `Unhandled`, and the caller takes PyYAML's path for that file:
the two paths give equal values, which tests/test_yaml_build.py checks on
generated documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

MERGE = "tag:yaml.org,2002:merge"
STR = "tag:yaml.org,2002:str"
_PLAIN = (
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG,
)


class Unhandled(Exception):
    """A document this builder leaves to PyYAML's own path."""


class Refused(Exception):
    """A bound was broken at `event`: `what` is "values", "depth" or "itself"."""

    def __init__(self, event: yaml.Event, what: str) -> None:
        super().__init__(what)
        self.event, self.what = event, what


@dataclass(slots=True)
class _Open:
    """A collection whose end event has not come yet."""

    start: yaml.Event
    value: list[Any] | dict[Any, Any]
    anchor: str | None
    size: int = 1
    height: int = 1
    key: Any = None
    key_event: Any = None  # its marks are libyaml's or PyYAML's
    merges: list[dict[Any, Any]] = field(default_factory=list)


class Builder:
    """One document's values from one loader's events (see the module docstring)."""

    def __init__(self, loader: Any, max_values: int, max_depth: int) -> None:
        self.loader, self.max_values, self.max_depth = loader, max_values, max_depth
        self.count = 0
        self.stack: list[_Open] = []
        self.anchors: dict[str, tuple[Any, int, int]] = {}  # value, size, height
        self.open_anchors: set[str] = set()
        self.scalars: dict[tuple[str, str], Any] = {}
        self.tags: dict[tuple[str, tuple[bool, bool]], str] = {}

    def document(self) -> object:
        """The single document of the stream (None when empty); YAMLError otherwise."""
        get = self.loader.get_event
        get()  # stream start
        event = get()
        if isinstance(event, yaml.StreamEndEvent):
            return None
        root = self._value(get)
        get()  # document end
        extra = get()
        if not isinstance(extra, yaml.StreamEndEvent):
            raise yaml.composer.ComposerError(
                None, None, "a second YAML document; a config is one document", extra.start_mark
            )
        return root

    def _value(self, get: Any) -> object:
        """Read events until one whole value (the document's root) is built.

        The loop body runs once per event of a 2 MB file (500,000 of them): the
        common cases (a plain scalar into an open collection) stay inline."""
        stack, tags, resolve = self.stack, self.tags, self.loader.resolve
        scalar_event, alias_event = yaml.ScalarEvent, yaml.AliasEvent
        starts = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
        while True:
            event = get()
            kind = type(event)
            if kind is scalar_event:
                tag = event.tag
                if tag is None or tag == "!":
                    key = (event.value, event.implicit)
                    tag = tags.get(key)
                    if tag is None:
                        tag = tags[key] = resolve(yaml.ScalarNode, *key)
                done = event.value if tag == STR else self._typed(tag, event)
                if event.anchor is not None:
                    self.anchors[event.anchor] = (done, 1, 0)
                size, height = 1, 0
            elif kind is alias_event:
                done, size, height = self._alias(event)
            elif kind in starts:
                self._start(event, kind is starts[0])
                continue
            else:  # a collection's end: its values were counted as they came
                top = stack.pop()
                done = self._close(top)
                if top.anchor is not None:
                    self.open_anchors.discard(top.anchor)
                    self.anchors[top.anchor] = (done, top.size, top.height)
                if not stack:
                    return done
                self._add(stack[-1], done, event, top.size, top.height)
                continue
            self._count(event, size, height)
            if not stack:
                return self._plain(done, event)
            self._add(stack[-1], done, event, size, height)

    def _count(self, event: yaml.Event, size: int, height: int) -> None:
        self.count += size
        if self.count > self.max_values:
            raise Refused(event, "values")
        if len(self.stack) + height > self.max_depth:
            raise Refused(event, "depth")

    def _start(self, event: Any, mapping: bool) -> None:
        if event.tag not in (None, "!") and event.tag not in _PLAIN:
            raise Unhandled(f"tagged collection {event.tag}")
        top = self.stack[-1] if self.stack else None
        if top is not None and isinstance(top.value, dict) and top.key_event is None:
            raise Unhandled("a collection as a mapping key")
        self._count(event, 1, 1)
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        value: list[Any] | dict[Any, Any] = {} if mapping else []
        self.stack.append(_Open(event, value, event.anchor))

    def _typed(self, tag: str, event: Any) -> object:
        """A scalar that is not a plain string, by PyYAML's constructors, once per text."""
        if tag == MERGE:
            return _Marker(tag, event.value)
        known = self.scalars.get((tag, event.value), _MISSING)
        if known is _MISSING:
            node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
            known = self.scalars[(tag, event.value)] = self.loader.construct_object(node, deep=True)
        return known

    def _alias(self, event: Any) -> tuple[object, int, int]:
        if event.anchor in self.open_anchors:
            raise Refused(event, "itself")
        if event.anchor not in self.anchors:
            raise yaml.composer.ComposerError(
                None, None, f"found undefined alias {event.anchor!r}", event.start_mark
            )
        return self.anchors[event.anchor]

    def _add(self, top: _Open, value: object, event: Any, size: int, height: int) -> None:
        """Put a finished value into the open collection above it."""
        top.size += size
        if height >= top.height:
            top.height = height + 1
        if isinstance(top.value, list):
            top.value.append(value if value.__class__ is not _Marker else self._plain(value, event))
        elif top.key_event is None:
            self._key(top, value, event)
        else:
            self._pair(top, value)

    def _key(self, top: _Open, key: object, event: yaml.Event) -> None:
        if not isinstance(key, _Marker):
            try:
                hash(key)
            except TypeError:
                raise Unhandled("an unhashable key") from None
        top.key, top.key_event = key, event

    def _pair(self, top: _Open, value: object) -> None:
        key, where = top.key, top.key_event
        top.key = top.key_event = None
        assert isinstance(top.value, dict)
        assert where is not None
        if isinstance(key, _Marker):  # `<<`, once per mapping
            if top.merges:
                raise yaml.constructor.ConstructorError(
                    None, None, "duplicate key '<<': merge a list instead", where.start_mark
                )
            top.merges.extend(_merged(value, where))
            return
        value = self._plain(value, where)
        if key in top.value and isinstance(key, str | int | float | bool):
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}"[:120], where.start_mark
            )
        top.value[key] = value

    def _plain(self, value: object, where: Any) -> object:
        """A value that is not a key: a `<<` there gets PyYAML's own error."""
        if not isinstance(value, _Marker):
            return value
        node = yaml.ScalarNode(value.tag, value.text, where.start_mark, where.end_mark)
        return self.loader.construct_object(node, deep=True)

    def _close(self, top: _Open) -> object:
        if isinstance(top.value, list) or not top.merges:
            return top.value
        merged: dict[Any, Any] = {}
        for part in top.merges:
            merged.update(part)
        merged.update(top.value)
        return merged


def _merged(value: object, where: Any) -> list[dict[Any, Any]]:
    """The mappings a `<<` value stands for, in the order they are applied (last wins)."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and all(isinstance(part, dict) for part in value):
        return list(reversed(value))  # the first of a list wins
    raise yaml.constructor.ConstructorError(
        None, None, "expected a mapping or list of mappings for merging", where.start_mark
    )


class _Marker:
    """A `<<` scalar: meaningful as a key only."""

    __slots__ = ("tag", "text")

    def __init__(self, tag: str, text: str) -> None:
        self.tag, self.text = tag, text


_MISSING = object()
