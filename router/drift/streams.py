"""What drift watches of one route: the request path's tap, and the streams of items.

*Tap* (request path). For a route with a `drift:` block the exchange asks the
`DriftSink` for a `Tap`: it keeps the raw request and answer bodies (each up to
TAP_MAX_BODY; a larger one is simply not observed) and, when the exchange
records, appends ONE tuple to the sink's pending list. Nothing is parsed there.
When MAX_PENDING items wait for the next pass (high load) `tap()` returns None:
at most ~5,000 requests a second are observed, plenty for binned statistics,
and above that rate a request pays one length test (counted as dropped).

*Streams* (background pass). The route's protocol (router/core/protocols/) reads
each body as items: a batch of k rows is k observations of every feature
(`observe_body`), so drift, prediction drift and the reference count rows, not
requests. Inputs are one stream per route; outputs one tracker per backend.
Until a stream has its reference, rows go to its collection of the first
`reference` rows; then the bins are fitted (router/core/drift.py) with each
feature's kind read from the values (a list is a vector, a number a number,
anything else a category). Calls that are not inference (V2 metadata, health)
are not observed at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

from router.config.spec import DriftSpec
from router.core.drift import DriftTracker, FeatureSpec, Reference, Window
from router.core.drift_scores import FeatureScore
from router.core.protocols import ModelProtocol
from router.core.protocols import get as protocol_named

TAP_MAX_BODY: Final = 64 * 1024  # bodies larger than this are not observed
# Items waiting for the background pass; beyond: sampled out. Per pass interval,
# so at most ~5,000 requests a second are observed: enough for any window's
# statistics, and above that rate the cost per request falls as the load grows.
MAX_PENDING: Final = 512
SLOTS: Final = 6  # a window is this many slots

# route, backend, request id, status, method, target, request body, answer body
Item = tuple[str, str, str, int, bytes, bytes, bytes | None, bytes | None]


class Tap:
    """One request's bodies, kept for the background pass."""

    __slots__ = ("ans", "ans_len", "method", "req", "req_len", "sink", "target")

    def __init__(self, sink: DriftSink, method: bytes, target: bytes) -> None:
        self.sink = sink
        self.method = method
        self.target = target
        self.req: list[bytes] = []
        self.ans: list[bytes] = []
        self.req_len = self.ans_len = 0

    def add_request(self, data: bytes) -> None:
        self.req_len += len(data)
        if self.req_len <= TAP_MAX_BODY:
            self.req.append(data)

    def add_answer(self, data: bytes) -> None:
        self.ans_len += len(data)
        if self.ans_len <= TAP_MAX_BODY:
            self.ans.append(data)

    def finish(self, route: str, backend: str, rid: str, status: int) -> None:
        req = b"".join(self.req) if 0 < self.req_len <= TAP_MAX_BODY else None
        ans = b"".join(self.ans) if 0 < self.ans_len <= TAP_MAX_BODY else None
        item = (route, backend, rid, status, self.method, self.target, req, ans)
        self.sink.pending.append(item)


class DriftSink:
    """The data plane's side: hands out taps while the background pass keeps up."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self.pending: list[Item] = []
        self.max_pending = max_pending
        self.dropped = 0

    def tap(self, method: bytes, target: bytes) -> Tap | None:
        if len(self.pending) >= self.max_pending:
            self.dropped += 1
            return None
        return Tap(self, method, target)

    def take(self) -> list[Item]:
        items, self.pending = self.pending, []
        return items


def _kind(values: Sequence[object]) -> str:
    """A feature's kind from the first value that has one (a vector, a number, a label)."""
    for v in values:
        if type(v) is list:
            return "vector"
        if type(v) is int or type(v) is float:
            return "number"
        if type(v) is str or type(v) is bool:
            return "category"
    return "number"


def feature_name(path: str) -> str:
    return path[2:] if path.startswith("$.") else path


def ref_id(reference: Reference) -> str:
    return hashlib.blake2b(reference.to_json().encode(), digest_size=4).hexdigest()


class Stream:
    """One observed stream of a route (inputs, or outputs per backend)."""

    def __init__(
        self, kind: str, names: Sequence[str], spec: DriftSpec, now: float, protocol: ModelProtocol
    ) -> None:
        self.kind = kind  # "in" | "out"
        self.paths = tuple(names)  # JSON paths or the protocol's names
        self.protocol = protocol
        self.spec = spec
        self.window = Window(slot_seconds=spec.window / SLOTS, slots=SLOTS)
        self.samples: list[tuple[object, ...]] = []
        self.reference: Reference | None = None
        self.rid = ""
        self.published = False  # our reference is (or came from) the store
        self.trackers: dict[str, DriftTracker] = {}
        self.now = now

    def rows(self, body: bytes) -> list[tuple[object, ...]]:
        """The body's items: one tuple of values (one per name) per row."""
        read = self.protocol.request_items if self.kind == "in" else self.protocol.answer_items
        return read(body, self.paths).rows(self.paths)

    def observe(self, key: str, values: tuple[object, ...]) -> None:
        if self.reference is None:
            self.samples.append(values)
            if len(self.samples) >= self.spec.reference:
                self.install(self.fit(self.samples), published=False)
            return
        tracker = self.trackers.get(key)
        if tracker is None:
            tracker = self.trackers[key] = DriftTracker(self.reference, self.window, self.now)
        tracker.observe(values)

    def fit(self, samples: Sequence[Sequence[object]]) -> Reference:
        specs = [
            FeatureSpec(feature_name(p), p, _kind([s[i] for s in samples[:200]]))
            for i, p in enumerate(self.paths)
        ]
        return Reference.fit(specs, samples)

    def install(self, reference: Reference | None, *, published: bool) -> None:
        self.reference, self.published = reference, published
        self.rid = ref_id(reference) if reference is not None else ""
        self.samples, self.trackers = [], {}

    def fit_file(self, path: str) -> None:
        """A reference from JSON lines of request bodies (the `reference_file`),
        read by the route's protocol: a batch on a line gives all its rows."""
        with open(path, "rb") as f:
            rows = [row for line in f if line.strip() for row in self.rows(line.strip())]
        if not rows:
            raise ValueError(f"{path}: no items in it")
        self.install(self.fit(rows), published=False)


class RouteDrift:
    """The streams of one route."""

    def __init__(self, route: str, spec: DriftSpec, now: float, protocol: str = "json") -> None:
        self.route = route
        self.spec = spec
        self.protocol = protocol_named(protocol)
        self.inputs = Stream("in", spec.inputs, spec, now, self.protocol) if spec.inputs else None
        self.outputs = (
            Stream("out", spec.outputs, spec, now, self.protocol) if spec.outputs else None
        )
        self.alarms: set[str] = set()  # "<stream>/<feature>" in alarm now
        self.last: dict[str, list[FeatureScore]] = {}  # stream label -> latest scores
        if self.inputs is not None and spec.reference_file:
            self.inputs.fit_file(spec.reference_file)

    def streams(self) -> list[Stream]:
        return [s for s in (self.inputs, self.outputs) if s is not None]
