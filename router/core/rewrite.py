"""Per-arm request rewrite: a shadow or a candidate gets its own `model` (and headers).

    shadow:
      primary: llama-3-8b
      shadows: [qwen-7b]
      rewrite:
        qwen-7b: {json: {model: Qwen/Qwen2.5-7B-Instruct}, headers: {X-Arm: shadow}}
    canary:
      stable: llama-3-8b
      candidate: qwen-7b
      rewrite:
        qwen-7b: {json: {model: Qwen/Qwen2.5-7B-Instruct}}

Keyed by backend name, so one route can shadow (or ramp) one model with another
served by the same server under another name: two backends with the same url.
`json` sets top-level members of the request's JSON object (a value replaces
what the client sent, whatever its type); `headers` are set, replacing the
client's of the same name. The primary (stable) always gets the client's
request as it was sent: only a shadow, the secondary or the candidate may be
rewritten.

Where it runs. A shadow's copy is rewritten by the mirror worker, off the
request path (a body that is not a JSON object is not sent and is counted as
`rewrite_failed`). A candidate's request is on the client's path: the data
plane holds its body until the end (bounded by `limits.max_body`), rewrites
it and sends it with its new Content-Length; a body that is not a JSON object
gets 400 from the router, naming the rewrite. Requests without a body get the
headers only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from router.core.confkit import RESERVED_HEADERS, Node

_TOKEN: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True, slots=True)
class Rewrite:
    """One arm's rewrite: JSON members (name, value as JSON text) and header lines."""

    members: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[bytes, bytes], ...] = ()  # lower-case names

    @property
    def names(self) -> frozenset[bytes]:
        """Header names the client's request loses (ours replace them)."""
        return frozenset(name for name, _ in self.headers)

    @property
    def lines(self) -> bytes:
        return b"".join(b"%b: %b\r\n" % (name, value) for name, value in self.headers)

    def body(self, body: bytes) -> bytes | None:
        """The rewritten JSON body; None when it is not a JSON object. Without members
        the body is sent as it came."""
        if not self.members:
            return body
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return None
        if not isinstance(doc, dict):
            return None
        for name, value in self.members:
            doc[name] = json.loads(value)
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def parse_rewrites(
    node: Node, allowed: tuple[str, ...], primary: str
) -> tuple[tuple[str, Rewrite], ...]:
    """`rewrite: {BACKEND: {json: {...}, headers: {...}}}`; only `allowed` backends."""
    out: list[tuple[str, Rewrite]] = []
    for name in list(node.keys()):
        block = node.mapping(name)
        if name == primary:
            block.error(block.path, "the primary gets the client's request as sent: "
                        f"rewrite a shadow or the candidate ({', '.join(allowed)})")  # fmt: skip
        elif name not in allowed:
            block.error(block.path, f"is not an arm of this route ({', '.join(allowed)})")
        rewrite = _one(block)
        if name in allowed and name != primary:
            out.append((name, rewrite))
    node.done()
    return tuple(out)


def _one(node: Node) -> Rewrite:
    members = node.mapping("json")
    found: list[tuple[str, str]] = []
    for key in list(members.keys()):
        value: Any = members.raw(key)
        found.append((str(key), json.dumps(value, ensure_ascii=False)))
    headers = node.mapping("headers")
    lines: list[tuple[bytes, bytes]] = []
    for key in list(headers.keys()):
        value = headers.raw(key)
        path = headers.sub(str(key))
        if not isinstance(key, str) or not _TOKEN.match(key) or key.lower() in RESERVED_HEADERS:
            headers.error(path, "must be a header name the router does not frame the message with")
        elif not isinstance(value, str | int | float) or isinstance(value, bool):
            headers.error(path, "must be a text value", value)
        elif "\r" in str(value) or "\n" in str(value):
            headers.error(path, "must be one line", value)
        else:
            lines.append((key.lower().encode(), str(value).encode("latin-1", "replace")))
    node.done()
    if not found and not lines and node.ok:
        node.error(node.path, "needs json or headers to rewrite")
    return Rewrite(tuple(found), tuple(lines))


def rewrite_for(pairs: tuple[tuple[str, Rewrite], ...], backend: str) -> Rewrite | None:
    for name, rewrite in pairs:
        if name == backend:
            return rewrite
    return None
