"""The seam every model protocol implements: bodies in, items out.

An item is one prediction: one row of a batch. A protocol module reads a
request body or an answer body and returns `Items`: for each name asked for,
one value per item, in order. Everything that judges model outputs (shadow
comparison, drift, prediction drift, delayed labels, the agreement gates) works
on those columns and never sees the protocol; a new protocol is one module and
one entry in router/core/protocols/__init__.py's registry.

Names. A name starting with `$` is a JSON path (router/core/jsonpath.py) read from
the whole document, on every protocol: without a `[*]` it is one item per body,
with one each element is an item. Any other name is the protocol's own: a
tensor of the Open Inference Protocol, a named input or output of TF Serving.

Two kinds of trouble, kept apart because they are judged differently:

    problem     the body is not what the protocol expects (not JSON, a tensor
                whose data does not fit its shape): that side has no items, so
                a comparison with a good answer disagrees ("missing").
    unreadable  a body this router cannot read although it may be fine (binary
                tensor data of a type it does not decode): not comparable; it
                is counted apart with the reason, never as a disagreement.

Everything here is pure and runs off the request path (the mirror workers, the
drift pass); `inference` is the only question asked about a request's path.
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import orjson

from router.core.jsonpath import MISSING, JsonPath, compile_path

NOT_JSON: Final = "not JSON"
MAX_INFLATED: Final = 64 * 1024 * 1024  # a compressed body never grows past this here


@dataclass(frozen=True, slots=True)
class Items:
    """A body read as items: name -> one value per item ([]: the body has none)."""

    columns: Mapping[str, Sequence[object]] = field(default_factory=dict)
    problem: str = ""  # the body is not what the protocol expects
    unreadable: str = ""  # the router cannot read it: not comparable

    @property
    def count(self) -> int:
        """Items in the body: the longest column."""
        return max((len(v) for v in self.columns.values()), default=0)

    def rows(self, names: Sequence[str]) -> list[tuple[object, ...]]:
        """One tuple per item, one value per name (MISSING where a column is short)."""
        cols = [self.columns.get(n, ()) for n in names]
        return [tuple(c[i] if i < len(c) else MISSING for c in cols) for i in range(self.count)]


class ModelProtocol(Protocol):
    """One protocol: the `protocol:` word of a route names it."""

    @property
    def word(self) -> str: ...

    def inference(self, method: bytes, target: bytes) -> bool:
        """True for an inference call; metadata, health and the rest are not judged."""
        ...

    def check(self, name: str) -> str:
        """Why a configured name cannot be read by this protocol ("" when it can)."""
        ...

    def advice(self, name: str, role: str) -> str:
        """A warning for `routerctl validate` ("" for none): the name can be read, but
        probably not as meant. `role` is "output" (compare, drift.outputs) or "input"."""
        ...

    def request_items(self, body: bytes, names: Sequence[str]) -> Items: ...

    def answer_items(self, body: bytes, names: Sequence[str] | None) -> Items:
        """The answer's items; with `names` None every output the answer has."""
        ...


@functools.lru_cache(maxsize=256)
def json_path(text: str) -> JsonPath:
    """Compiled once per name (config validation already refused bad ones)."""
    return compile_path(text)


def path_check(name: str) -> str:
    try:
        json_path(name)
    except ValueError as exc:
        return f"bad JSON path: {exc}"
    return ""


def path_column(doc: object, name: str) -> list[object]:
    """The items of a JSON path in a decoded document (see the module docstring)."""
    return json_path(name).items(doc) if doc is not MISSING else []


def inflate(body: bytes, limit: int = MAX_INFLATED) -> bytes:
    """A gzip or zlib (HTTP "deflate") body decompressed; any other body as it is.

    Model servers compress answers for clients that accept it (MLServer gzips every
    answer of 500 bytes or more, and `requests` always accepts gzip), and clients may
    compress requests (tritonclient's request_compression_algorithm). The captured
    bytes carry no headers, so the format is told by its magic: no JSON document
    starts with 0x1f or 'x'. A body that would inflate past `limit` is left as it
    is (and reads as not JSON)."""
    if body[:2] == b"\x1f\x8b":
        wbits = 16 + zlib.MAX_WBITS
    elif body[:1] == b"x" and int.from_bytes(body[:2], "big") % 31 == 0:
        wbits = zlib.MAX_WBITS
    else:
        return body
    try:
        unpack = zlib.decompressobj(wbits)
        out = unpack.decompress(body, limit)
    except zlib.error:
        return body
    return body if unpack.unconsumed_tail else out


def loads(body: bytes) -> object:
    """The decoded body, or MISSING when it is not JSON.

    orjson first: it reads numbers several times faster than `json`, which is
    most of the cost of a wide feature vector. `json` second, for what orjson
    refuses and Python model servers still send: NaN and Infinity (json.dumps
    writes them), integers beyond 64 bits."""
    if not body:
        return MISSING
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return MISSING


def paths_only(doc: object, names: Sequence[str]) -> dict[str, Sequence[object]]:
    """Columns of the `$` names alone (protocol names find nothing here)."""
    return {n: path_column(doc, n) if n.startswith("$") else [] for n in names}


def kind_name(value: object) -> str:
    """A JSON value's type in words, for reasons and hints."""
    if value is MISSING:
        return "missing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "object"
