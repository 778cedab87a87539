"""A tiny JSONPath subset for picking fields out of model answers.

    $                 the whole document
    .name             a member (letters, digits, `_` and `-`)
    ['any name']      a member whose name needs quoting ("..." works too)
    [0] [-1]          a list element, negative counts from the end
    [*]               every element of a list (or every value of an object)

Theory of operation. `compile_path` parses the text once, at config load, into
a tuple of steps (str: member, int: index, `_STAR`: wildcard) and reports the
first problem with its character position, so a typo in config.yaml is refused
with a message naming the exact spot. `JsonPath.get` walks a document already
decoded by `json.loads`: a plain loop with no recursion unless a wildcard is
involved. A step that does not fit (a member of a list, an index past the end)
yields `MISSING`, which is distinct from JSON `null`. A wildcard gathers the
values found under each element into a list, leaving out the ones missing;
`items` instead keeps one value per element (MISSING where it has none): the
items of a `json` route (router/core/protocols/jsonpaths.py).

`render` is the inverse for reporting: it writes a step sequence as the
canonical text (`$.a['b c'][2]`) used for differing paths.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_INDEX: Final = re.compile(r"-?\d+")


class _Missing:
    """The type of MISSING: a value that is not in the document."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()


class _Star:
    __slots__ = ()

    def __repr__(self) -> str:
        return "[*]"


_STAR: Final = _Star()

Step = str | int | _Star


class JsonPath:
    """A compiled path; `get(doc)` returns the value or MISSING."""

    __slots__ = ("_wild", "steps", "text")

    def __init__(self, text: str, steps: tuple[Step, ...]) -> None:
        self.text = text
        self.steps = steps
        self._wild = any(isinstance(s, _Star) for s in steps)

    def __repr__(self) -> str:
        return f"JsonPath({self.text!r})"

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonPath) and other.steps == self.steps

    def __hash__(self) -> int:
        return hash(self.steps)

    @property
    def wild(self) -> bool:
        return self._wild

    def items(self, doc: object) -> list[object]:
        """The path's values as items: one per element at the first `[*]` (MISSING
        where an element lacks the rest of the path, so items stay aligned), [] when
        the list itself is missing; without a wildcard [value], or [] when missing."""
        if not self._wild:
            value = self.get(doc)
            return [] if value is MISSING else [value]
        cut = next(i for i, s in enumerate(self.steps) if isinstance(s, _Star))
        head = _walk(doc, self.steps[:cut])
        elements = head if isinstance(head, list) else _values(head)
        if elements is None:
            return []
        rest = self.steps[cut + 1 :]
        return [_walk(element, rest) for element in elements]

    def get(self, doc: object) -> object:
        """The value at this path in a decoded JSON document, or MISSING."""
        if self._wild:
            return _walk(doc, self.steps)
        for step in self.steps:
            doc = _step(doc, step)
            if doc is MISSING:
                break
        return doc


def _step(doc: object, step: Step) -> object:
    if isinstance(step, str):
        return doc.get(step, MISSING) if isinstance(doc, dict) else MISSING
    if isinstance(step, int) and isinstance(doc, list):
        return doc[step] if -len(doc) <= step < len(doc) else MISSING
    return MISSING


def _walk(doc: object, steps: Sequence[Step]) -> object:
    """`get` with wildcards: recursion only where a `[*]` fans out."""
    for i, step in enumerate(steps):
        if isinstance(step, _Star):
            items = doc if isinstance(doc, list) else _values(doc)
            if items is None:
                return MISSING
            found = (_walk(item, steps[i + 1 :]) for item in items)
            return [v for v in found if v is not MISSING]
        doc = _step(doc, step)
        if doc is MISSING:
            return MISSING
    return doc


def _values(doc: object) -> list[object] | None:
    return list(doc.values()) if isinstance(doc, dict) else None


def compile_path(text: str) -> JsonPath:
    """Parse `text`; raises ValueError naming the position of the first problem."""
    if not text.startswith("$"):
        raise ValueError("must start with '$'")
    steps: list[Step] = []
    pos = 1
    while pos < len(text):
        char = text[pos]
        if char == ".":
            pos = _member(text, pos + 1, steps)
        elif char == "[":
            pos = _bracket(text, pos + 1, steps)
        else:
            raise ValueError(f"unexpected {char!r} at position {pos}, expected '.' or '['")
    return JsonPath(text, tuple(steps))


def _member(text: str, pos: int, steps: list[Step]) -> int:
    m = _NAME.match(text, pos)
    if m is None:
        raise ValueError(f"expected a name after '.' at position {pos}")
    steps.append(m.group())
    return m.end()


def _bracket(text: str, pos: int, steps: list[Step]) -> int:
    """Parse what follows a '['; returns the position after the closing ']'."""
    if text.startswith("*]", pos):
        steps.append(_STAR)
        return pos + 2
    if pos < len(text) and text[pos] in "'\"":
        name, pos = _quoted(text, pos)
        steps.append(name)
    elif m := _INDEX.match(text, pos):
        steps.append(int(m.group()))
        pos = m.end()
    else:
        raise ValueError(f"expected an index, '*' or a quoted name at position {pos}")
    if not text.startswith("]", pos):
        raise ValueError(f"expected ']' at position {pos}")
    return pos + 1


def _quoted(text: str, pos: int) -> tuple[str, int]:
    """A quoted name starting at `pos`; backslash escapes the next character."""
    quote, out, i = text[pos], [], pos + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif char == quote:
            return "".join(out), i + 1
        else:
            out.append(char)
            i += 1
    raise ValueError(f"unterminated quoted name starting at position {pos}")


def render(steps: Iterable[str | int]) -> str:
    """Steps as canonical path text: `.name` when plain, else `['...']`."""
    parts = ["$"]
    for step in steps:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif _NAME.fullmatch(step):
            parts.append(f".{step}")
        else:
            escaped = step.replace("\\", "\\\\").replace("'", "\\'")
            parts.append(f"['{escaped}']")
    return "".join(parts)
