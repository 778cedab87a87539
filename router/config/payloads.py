"""What a route watches and keeps of its payloads: `drift:`, `capture:`, `redact:`.

Each block is read with exact-path errors. Drift is router/drift/; the other two:

    capture:
      mode: all                      # request | response | all
      sample: 0.05                   # share of requests, 0..1
      arms: [primary, candidate, shadow]
      max_body: 64KiB                # per body kept; longer ones are cut (and say so)
      sink: {file: {path: capture/iris.jsonl, max_bytes: 64MiB, keep: 5}}
      # or: sink: {http: {url: http://logger:8080/, timeout: 2s, retries: 2, batch: 64}}
    redact:
      headers: [content-type, user-agent]   # allow-list; credentials never
      remove: [$.user.ssn]                  # JSON paths taken out
      hash: [$.user.id]                     # replaced by length + sha256
      patterns: [email, card, phone]        # the shipped ones ([] switches them off)
      custom: [{name: iban, regex: "[A-Z]{2}\\d{2}[A-Z0-9]{11,30}"}]

Read by router/config/reader.py per route; what the values mean is router/core/redact.py
and router/capture/.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from router.config.spec import (
    CaptureSpec,
    DriftSpec,
    FileSinkSpec,
    HttpSinkSpec,
    RedactSpec,
)
from router.core.confkit import Node
from router.core.jsonpath import compile_path
from router.core.redact import SHIPPED, secret_header

MODES = ("request", "response", "all")
ARMS = ("primary", "candidate", "shadow")
MAX_BODY = 1024 * 1024  # the data plane never keeps more of one body
_DEFAULT = CaptureSpec()
_FILE = FileSinkSpec("")
_HTTP = HttpSinkSpec("")


def read_capture(route: Node) -> CaptureSpec | None:
    if route.raw("capture") is None:
        return None
    node = route.mapping("capture")
    arms = _arms(node)
    spec = CaptureSpec(
        mode=node.choice("mode", _DEFAULT.mode, MODES),
        sample=node.number("sample", _DEFAULT.sample, 0.0, 1.0),
        arms=arms,
        max_body=node.size("max_body", _DEFAULT.max_body, hi=MAX_BODY),
    )
    file, http = _sink(node)
    node.done()
    return CaptureSpec(spec.mode, spec.sample, spec.arms, spec.max_body, file, http)


def _arms(node: Node) -> frozenset[str]:
    if node.raw("arms") is None:
        return _DEFAULT.arms
    out: set[str] = set()
    for path, item in node.items("arms"):
        if item not in ARMS:
            node.error(path, f"must be one of {', '.join(ARMS)}", item)
            continue
        out.add(str(item))
    if node.data.get("arms") == []:
        node.error(node.sub("arms"), "must name at least one arm", [])
    return frozenset(out) or _DEFAULT.arms


def _sink(capture: Node) -> tuple[FileSinkSpec | None, HttpSinkSpec | None]:
    node = capture.mapping("sink", required=True)
    words = [k for k in ("file", "http") if node.has(k)]
    if node.ok and len(words) != 1:
        node.error(node.path, "must have exactly one of file, http", list(node.keys()))
    file = _file(node.mapping("file")) if node.has("file") else None
    http = _http(node.mapping("http")) if node.has("http") else None
    node.done()
    return file, http


def _file(node: Node) -> FileSinkSpec:
    path = node.string("path", required=True)
    if path and "\0" in path:
        node.error(node.sub("path"), "must be a file path", path)
    spec = FileSinkSpec(
        path,
        max_bytes=node.size("max_bytes", _FILE.max_bytes),
        keep=node.integer("keep", _FILE.keep, 0, 1000),
    )
    if node.has("max_bytes") and spec.max_bytes < 4096:
        node.error(node.sub("max_bytes"), "must be at least 4KiB", spec.max_bytes)
    node.done()
    return spec


def _http(node: Node) -> HttpSinkSpec:
    url = node.string("url", required=True)
    parts = urlsplit(url) if url else None
    if parts is not None and (parts.scheme not in ("http", "https") or not parts.hostname):
        node.error(node.sub("url"), "must be an http or https URL with a host", url)
    spec = HttpSinkSpec(
        url,
        timeout=node.duration("timeout", _HTTP.timeout, hi=60),
        retries=node.integer("retries", _HTTP.retries, 0, 10),
        batch=node.integer("batch", _HTTP.batch, 1, 10_000),
        concurrency=node.integer("concurrency", _HTTP.concurrency, 1, 256),
        queue=node.integer("queue", _HTTP.queue, 1, 1_000_000),
        max_bytes=node.size("max_bytes", _HTTP.max_bytes),
        source=node.string("source", _HTTP.source),
        namespace=node.opt_string("namespace") or "",
    )
    node.done()
    return spec


# -- drift -------------------------------------------------------------------------
def _paths(node: Node, key: str) -> tuple[str, ...]:
    """A list of names: JSON paths, or the route protocol's own (checked per route)."""
    out: list[str] = []
    for path, item in node.items(key):
        if not isinstance(item, str) or not item:
            node.error(path, "must be a JSON path like $.features (or a protocol's name)", item)
            continue
        out.append(item)
    return tuple(out)


def read_drift(route: Node) -> DriftSpec | None:
    if route.raw("drift") is None:
        return None
    node = route.mapping("drift")
    d = DriftSpec()
    inputs, outputs = _paths(node, "inputs"), _paths(node, "outputs")
    spec = DriftSpec(
        inputs=inputs,
        outputs=outputs,
        reference=node.integer("reference", d.reference, 10, 10_000_000),
        reference_file=node.readable_file("reference_file"),
        threshold=node.number("threshold", d.threshold, 0.0, 100.0),
        min_samples=node.integer("min_samples", d.min_samples, 1, 10**9),
        window=node.duration("window", d.window),
    )
    if node.ok and not inputs and not outputs:
        node.error(node.path, "must list at least one of inputs or outputs")
    node.done()
    return spec


# -- redact -------------------------------------------------------------------------
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def read_redact(route: Node) -> RedactSpec:
    if route.raw("redact") is None:
        return RedactSpec()
    node = route.mapping("redact")
    d = RedactSpec()
    spec = RedactSpec(
        headers=_headers(node) if node.raw("headers") is not None else d.headers,
        remove=_json_paths(node, "remove"),
        hash=_json_paths(node, "hash"),
        patterns=_patterns(node) if node.raw("patterns") is not None else d.patterns,
        custom=_custom(node),
    )
    node.done()
    return spec


def _headers(node: Node) -> tuple[str, ...]:
    out: list[str] = []
    for path, item in node.items("headers"):
        if not isinstance(item, str) or not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", item):
            node.error(path, "must be a header name", item)
        elif secret_header(item):
            node.error(path, "carries credentials: never written, cannot be allowed", item)
        else:
            out.append(item.lower())
    return tuple(out)


def _json_paths(node: Node, key: str) -> tuple[str, ...]:
    out: list[str] = []
    for path, item in node.items(key):
        if not isinstance(item, str) or not item.startswith("$"):
            node.error(path, "must be a JSON path like $.user.email", item)
            continue
        try:
            compile_path(item)
        except ValueError as exc:
            node.error(path, f"bad JSON path: {exc}", item)
            continue
        out.append(item)
    return tuple(out)


def _patterns(node: Node) -> tuple[str, ...]:
    out: list[str] = []
    for path, item in node.items("patterns"):
        if item not in SHIPPED:
            node.error(path, f"must be one of {', '.join(SHIPPED)} (custom: for your own)", item)
            continue
        out.append(str(item))
    return tuple(out)


def _custom(node: Node) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for path, item in node.items("custom"):
        one = Node(item, path, node.errors)
        name, regex = one.string("name", required=True), one.string("regex", required=True)
        one.done()
        if name and not _NAME.match(name):
            one.error(one.sub("name"), "must match [A-Za-z0-9_-]+", name)
        if regex:
            try:
                re.compile(regex)
            except re.error as exc:
                one.error(one.sub("regex"), f"not a regular expression: {exc}", regex)
                continue
        if name and regex:
            out.append((name, regex))
    return tuple(out)
