"""`protocol: v2`: the Open Inference Protocol (KServe V2: MLServer, Triton, KServe).

    POST .../v2/models/NAME[/versions/V]/infer
    {"inputs":  [{"name": "x", "shape": [3, 4], "datatype": "FP32", "data": [...]}]}
    {"outputs": [{"name": "predict", "shape": [3], "datatype": "INT64", "data": [...]}]}

Tensors are found by `name`; `parameters` are ignored. The first dimension of
`shape` is the batch: row i of a tensor is one item. `data` may be nested
(`[[1, 2], [3, 4]]`) or flat row-major (`[1, 2, 3, 4]`, as tritonclient sends
it); either way it must hold exactly prod(shape) values. A row of several
values is a flat list (a [3, 2, 2] tensor has rows of 4); a row of one value
(shape [N] or [N, 1], as MLServer answers) is that value.

Binary data extension: a body may be a JSON header followed by raw tensor bytes
(its length is the `Inference-Header-Content-Length` header; the JSON's own end
tells us the same, so no header is needed here). Each tensor whose
`parameters.binary_data_size` is set takes that many bytes, in tensor order.
Fixed-size types and BYTES (4-byte little-endian length before each element) are
decoded; a type numpy cannot read (BF16) makes the body unreadable: not
comparable, with that reason, never a disagreement.

Only POSTs to an `/infer` path are inference calls: metadata (`GET
/v2/models/NAME`), readiness and health pass through and are not judged.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Final

from router.core.jsonpath import MISSING
from router.core.protocols.base import NOT_JSON, Items, inflate, loads, path_check, path_column

_INFER: Final = re.compile(rb"/v2/models/[^/?]+(?:/versions/[^/?]+)?/infer(?:\?.*)?$")
_DECODER: Final = json.JSONDecoder()
_FIXED: Final = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


class Bad(ValueError):
    """A tensor that cannot be read; `unreadable` when the fault is ours, not the body's."""

    def __init__(self, message: str, *, unreadable: bool = False) -> None:
        super().__init__(message)
        self.unreadable = unreadable


class OpenInference:
    word = "v2"

    def inference(self, method: bytes, target: bytes) -> bool:
        return method == b"POST" and _INFER.search(target) is not None

    def check(self, name: str) -> str:
        if name.startswith("$"):
            return path_check(name)
        return "" if name.strip() else "must name a tensor"

    def advice(self, name: str, role: str) -> str:
        if not name.startswith("$"):
            return ""
        return (
            f"{name} is a JSON path: on a v2 route it is read once per request, not per row; "
            f"name the tensor instead ({role}: NAME) to judge every row"
        )

    def request_items(self, body: bytes, names: Sequence[str]) -> Items:
        return read(inflate(body), "inputs", names)

    def answer_items(self, body: bytes, names: Sequence[str] | None) -> Items:
        return read(inflate(body), "outputs", names)


def read(body: bytes, key: str, names: Sequence[str] | None) -> Items:
    """The tensors under `key` ("inputs" or "outputs") as columns of rows."""
    split = split_body(body)
    if split is None:
        return Items({}, NOT_JSON)
    doc, tail = split
    try:
        table = tensors(doc, key, tail, None if names is None else set(names))
    except Bad as exc:
        return Items({}, "" if exc.unreadable else str(exc), str(exc) if exc.unreadable else "")
    if names is None:
        return Items(table)
    return Items({n: path_column(doc, n) if n.startswith("$") else table.get(n, []) for n in names})


def split_body(body: bytes) -> tuple[object, bytes] | None:
    """(JSON document, binary tail) of a body; None when it does not start with JSON."""
    doc = loads(body)
    if doc is not MISSING:
        return doc, b""
    try:  # latin-1 maps byte i to character i: the JSON's end is a byte offset
        _, end = _DECODER.raw_decode(body.decode("latin-1"))
    except ValueError:
        return None
    head = loads(body[:end])
    return None if head is MISSING else (head, body[end:])


def tensors(doc: object, key: str, tail: bytes, wanted: set[str] | None) -> dict[str, list[object]]:
    """name -> rows of every tensor under `key` that is wanted (None: all)."""
    found = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(found, list):
        return {}  # an error answer, or a request without inputs: no items
    table: dict[str, list[object]] = {}
    offset = 0
    for i, tensor in enumerate(found):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise Bad(f"{key}[{i}] is not a named tensor")
        name = tensor["name"]
        size = _binary_size(tensor)
        chunk = tail[offset : offset + size] if size is not None else None
        offset += size or 0
        if wanted is not None and name not in wanted:
            continue
        if chunk is not None and len(chunk) < (size or 0):
            raise Bad(f"{key} '{name}': binary data shorter than binary_data_size")
        try:
            table[name] = rows(tensor, chunk)
        except Bad as exc:
            raise Bad(f"{key} '{name}': {exc}", unreadable=exc.unreadable) from None
    if len({len(v) for v in table.values()}) > 1:
        sizes = ", ".join(f"{n} {len(v)}" for n, v in table.items())
        raise Bad(f"{key} disagree on the batch size ({sizes})")
    return table


def _binary_size(tensor: dict[str, object]) -> int | None:
    params = tensor.get("parameters")
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def rows(tensor: dict[str, object], chunk: bytes | None) -> list[object]:
    """One value (or flat list) per row of the batch (see the module docstring)."""
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise Bad(f"shape must be a list of sizes, got {shape!r}")
    datatype = str(tensor.get("datatype", ""))
    flat = binary(datatype, chunk) if chunk is not None else flatten(tensor.get("data"))
    total = math.prod(shape)
    if len(flat) != total:
        raise Bad(f"{len(flat)} values for shape {shape}")
    if len(shape) < 2:
        return flat  # a scalar is one item; shape [N]: one value per row
    batch = shape[0]
    per = total // batch if batch else 0
    if per == 1:
        return flat
    return [flat[i * per : (i + 1) * per] for i in range(batch)]


def flatten(data: object) -> list[object]:
    """Row-major values of nested lists; flat data comes back as it is."""
    if not isinstance(data, list):
        raise Bad("no data" if data is None else "data must be a list")
    if not any(isinstance(x, list) for x in data):
        return data
    out: list[object] = []
    _extend(out, data, 0)
    return out


def _extend(out: list[object], data: list[object], depth: int) -> None:
    if depth > 32:
        raise Bad("data nested deeper than 32 levels")
    for x in data:
        if isinstance(x, list):
            _extend(out, x, depth + 1)
        else:
            out.append(x)


def binary(datatype: str, chunk: bytes) -> list[object]:
    """Decode one tensor's raw bytes (little-endian, row-major)."""
    if datatype == "BYTES":
        return _bytes_elements(chunk)
    import numpy as np  # late: only binary bodies need it

    dtype = _FIXED.get(datatype)
    if dtype is None:
        raise Bad(f"binary {datatype or 'untyped'} data is not decoded here", unreadable=True)
    width = np.dtype(dtype).itemsize
    if len(chunk) % width:
        raise Bad(f"{len(chunk)} bytes is not a whole number of {datatype} values")
    values: list[object] = np.frombuffer(chunk, dtype=dtype).tolist()
    return values


def _bytes_elements(chunk: bytes) -> list[object]:
    out: list[object] = []
    pos = 0
    while pos < len(chunk):
        size = int.from_bytes(chunk[pos : pos + 4], "little")
        if pos + 4 + size > len(chunk):
            raise Bad("BYTES element longer than the data")
        out.append(chunk[pos + 4 : pos + 4 + size].decode("utf-8", "replace"))
        pos += 4 + size
    return out


V2: Final = OpenInference()
