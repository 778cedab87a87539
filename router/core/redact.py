"""What is taken out of a payload before the router keeps it anywhere.

A route's `redact:` block (router/config/spec.py `RedactSpec`) is compiled once
into a `Redactor`, which capture (router/capture/) and the shadow disagreement
samples (router/shadow/records.py) both apply, so a payload leaves the process
the same way whichever door it takes. Three tools:

    headers   an allow-list: only the named headers are kept, and never one
              that carries a credential (Authorization, Cookie, API keys,
              tokens: `secret_header`), whatever the list says
    paths     JSON paths removed from the document, or replaced by
              {"redacted": <length of its JSON text>, "sha256": <first 16 hex>}
              so equal values can still be told equal
    patterns  regexes over every string (object keys too): e-mail addresses,
              card numbers (Luhn-checked), phone numbers; shipped on, each
              can be switched off; the operator may add their own

Failing closed: a `Redactor` raises `RedactionError` when it cannot be sure
(a document nested too deep to walk); callers drop the record and count it,
they never keep it raw. Pure: no I/O, no clock.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol

from router.core.jsonpath import JsonPath, compile_path

MAX_DEPTH: Final = 64  # deeper documents are refused (fail closed), never half-walked


class RedactionError(ValueError):
    """The payload could not be redacted with certainty: it must not be kept."""


# Header names that carry credentials: never written, whatever the allow-list says.
_SECRET_NAMES: Final = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key"}
)
_SECRET_PARTS: Final = ("token", "secret", "password", "passwd", "auth", "session", "api-key",
                        "apikey", "api_key", "credential", "signature")  # fmt: skip


def secret_header(name: str) -> bool:
    """True for a header that may carry a credential (never written)."""
    low = name.lower()
    return low in _SECRET_NAMES or any(part in low for part in _SECRET_PARTS)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group(0))
    return "[card]" if 13 <= len(digits) <= 19 and _luhn(digits) else m.group(0)


def _phone(m: re.Match[str]) -> str:
    digits = sum(c.isdigit() for c in m.group(0))
    return "[phone]" if 9 <= digits <= 15 else m.group(0)


Replace = str | Callable[[re.Match[str]], str]
# name -> (pattern, replacement); applied in this order (a card is not a phone number)
# Linear time on any input (a payload is untrusted): each pattern may only start where a
# run of its characters starts (the lookbehinds), and every repeat is bounded or
# possessive, so no input makes the engine backtrack over a long run.
SHIPPED: Final[dict[str, tuple[re.Pattern[str], Replace]]] = {
    "email": (re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}+@"
                         r"(?:[A-Za-z0-9-]{1,63}+\.){1,8}+[A-Za-z]{2,24}+(?![A-Za-z0-9-])"),
              "[email]"),
    "card": (re.compile(r"(?<![\w.])\d(?:[ -]?\d){12,18}(?![\w.])"), _card),
    "phone": (re.compile(r"(?<![\w.+(])\+?\(?\d[\d ()-]{7,20}\d(?![\w.])"), _phone),
}  # fmt: skip


def fingerprint(value: object) -> dict[str, object]:
    """What a hashed path leaves: the length of the value's JSON text and its hash."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return {"redacted": len(text), "sha256": digest}


class Redactor:
    """One route's redaction, compiled (see the module docstring)."""

    def __init__(
        self,
        headers: Iterable[str],
        remove: Sequence[str] = (),
        hashed: Sequence[str] = (),
        patterns: Sequence[str] = (),
        custom: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.kept = frozenset(h.lower() for h in headers if not secret_header(h))
        self._kept_bytes = frozenset(h.encode("latin-1") for h in self.kept)
        self.remove = tuple(compile_path(p) for p in remove)
        self.hashed = tuple(compile_path(p) for p in hashed)
        rules = [SHIPPED[name] for name in SHIPPED if name in patterns]
        rules += [(re.compile(rx), f"[{name}]") for name, rx in custom]
        self.rules: tuple[tuple[re.Pattern[str], Replace], ...] = tuple(rules)
        # Most strings (keys, labels) hold neither a digit nor an @: one search skips them.
        # A custom pattern may match anything, so with one every string is searched.
        self._maybe = None if custom else re.compile(r"[@\d]")

    # -- headers -----------------------------------------------------------------
    def headers(self, headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
        """The allowed headers (first value of each), free text redacted."""
        out: dict[str, str] = {}
        kept = self._kept_bytes
        for name, value in headers:
            low = name.lower()
            if low not in kept:
                continue
            key = low.decode("latin-1")
            if key not in out:
                out[key] = self.text(value.decode("latin-1"))
        return out

    # -- free text -------------------------------------------------------------
    def text(self, text: str) -> str:
        if self._maybe is not None and self._maybe.search(text) is None:
            return text
        for pattern, replacement in self.rules:
            text = pattern.sub(replacement, text)
        return text

    # -- documents ---------------------------------------------------------------
    def document(self, doc: object) -> object:
        """`doc` with the paths removed or hashed and every string's free text
        redacted; a new value (the input is not changed)."""
        # One walk makes the new document (strings redacted, or a plain copy); the paths
        # are then edited in place in that copy.
        doc = self._strings(doc, 0) if self.rules else _copy(doc, 0)
        for path in self.remove:
            doc = _edit(doc, path, None)
        for path in self.hashed:
            doc = _edit(doc, path, fingerprint)
        return doc

    def _strings(self, doc: object, depth: int) -> object:
        if depth > MAX_DEPTH:
            raise RedactionError(f"nested deeper than {MAX_DEPTH}")
        if isinstance(doc, str):
            return self.text(doc)
        walk, deeper = self._strings, depth + 1
        if isinstance(doc, list):  # numbers (feature vectors) without a call each
            return [walk(v, deeper) if type(v) in _WALKED else v for v in doc]
        if isinstance(doc, dict):
            text = self.text
            return {text(str(k)): walk(v, deeper) if type(v) in _WALKED else v
                    for k, v in doc.items()}  # fmt: skip
        return doc


_WALKED: Final = frozenset({str, list, dict})


def _copy(doc: object, depth: int) -> object:
    """A deep copy of a decoded JSON document, refusing one nested too deep."""
    if depth > MAX_DEPTH:
        raise RedactionError(f"nested deeper than {MAX_DEPTH}")
    if isinstance(doc, list):
        return [_copy(v, depth + 1) for v in doc]
    if isinstance(doc, dict):
        return {k: _copy(v, depth + 1) for k, v in doc.items()}
    return doc


Edit = Callable[[object], object] | None  # None: remove


def _edit(doc: object, path: JsonPath, edit: Edit) -> object:
    steps = path.steps
    if not steps:  # `$`: the whole document
        return fingerprint(doc) if edit is not None else None
    _apply(doc, steps, edit)
    return doc


def _apply(node: object, steps: Sequence[object], edit: Edit) -> None:
    step, rest = steps[0], steps[1:]
    if isinstance(step, str):
        if isinstance(node, dict) and step in node:
            _at(node, step, rest, edit)
    elif isinstance(step, int):
        if isinstance(node, list) and -len(node) <= step < len(node):
            _at(node, step if step >= 0 else len(node) + step, rest, edit)
    elif isinstance(node, list):  # [*]
        for i in reversed(range(len(node))):
            _at(node, i, rest, edit)
    elif isinstance(node, dict):
        for key in list(node):
            _at(node, key, rest, edit)


def _at(parent: dict[str, object] | list[object], key: str | int, rest: Sequence[object],
        edit: Edit) -> None:  # fmt: skip
    if rest:
        _apply(parent[key], rest, edit)  # type: ignore[index]
    elif edit is None:
        del parent[key]  # type: ignore[arg-type]
    else:
        parent[key] = edit(parent[key])  # type: ignore[index]


class Settings(Protocol):
    """A `redact:` block (router/config/spec.py RedactSpec)."""

    @property
    def headers(self) -> tuple[str, ...]: ...
    @property
    def remove(self) -> tuple[str, ...]: ...
    @property
    def hash(self) -> tuple[str, ...]: ...
    @property
    def patterns(self) -> tuple[str, ...]: ...
    @property
    def custom(self) -> tuple[tuple[str, str], ...]: ...


def redactor_for(r: Settings) -> Redactor:
    """The compiled redactor of a route's `redact:` block (one per distinct block)."""
    return redactor(r.headers, r.remove, r.hash, r.patterns, r.custom)


@functools.lru_cache(maxsize=256)
def redactor(
    headers: tuple[str, ...],
    remove: tuple[str, ...],
    hashed: tuple[str, ...],
    patterns: tuple[str, ...],
    custom: tuple[tuple[str, str], ...],
) -> Redactor:
    """Compiled once per distinct `redact:` block (they are frozen values)."""
    return Redactor(headers, remove, hashed, patterns, custom)
