"""Drift counts rows, not requests, on every protocol (pure, on a simulated clock):
a batch of k rows adds k to every feature's count; one feature shifted by one
standard deviation alarms on that feature alone within 2,000 rows; 100,000
unshifted rows raise no alarm."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from router.config.spec import DriftSpec
from router.core.drift_scores import scores
from router.drift.streams import RouteDrift, Stream

DIMS, SHIFTED = 4, 2
Encode = Callable[[np.ndarray], bytes]


def v2_body(rows: np.ndarray) -> bytes:
    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
              "data": [round(float(x), 4) for x in rows.ravel()]}  # fmt: skip
    return json.dumps({"inputs": [tensor]}).encode()


def tfs_body(rows: np.ndarray) -> bytes:
    return json.dumps({"instances": np.round(rows, 4).tolist()}).encode()


PROTOCOLS: dict[str, tuple[str, Encode, str]] = {
    "v2": ("input-0", v2_body, "input-0"),
    "tfserving": ("instances", tfs_body, "instances"),
    "json": ("$.instances[*]", tfs_body, "instances[*]"),
}


def batches(rng: np.random.Generator, rows: int, shift: float = 0.0) -> Iterator[np.ndarray]:
    """Batches of 1..16 rows, `rows` in all; feature SHIFTED moved by `shift` sd."""
    done = 0
    while done < rows:
        k = min(int(rng.integers(1, 17)), rows - done)
        batch = rng.normal(size=(k, DIMS))
        batch[:, SHIFTED] += shift
        done += k
        yield batch


class Clock:
    """500 rows a simulated second: the 60 s window holds 30,000 rows."""

    def __init__(self) -> None:
        self.now, self.rows = 1000.0, 0

    def tick(self, rows: int) -> float:
        self.rows += rows
        self.now = 1000.0 + self.rows / 500
        return self.now


def feed(stream: Stream, body: bytes, clock: Clock) -> int:
    rows = stream.rows(body)
    now = clock.tick(len(rows))
    stream.now = now
    for tracker in stream.trackers.values():
        tracker.advance(now)
    for row in rows:
        stream.observe("", row)
    return len(rows)


def alarms(stream: Stream) -> list[str]:
    assert stream.reference is not None
    counts = stream.trackers[""].counts() if "" in stream.trackers else {}
    found = scores(stream.reference, counts, threshold=0.2, min_n=500)
    return [s.name for s in found if s.alarm]


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_rows_are_counted_and_one_shift_alarms_alone(protocol: str) -> None:
    name, encode, feature = PROTOCOLS[protocol]
    spec = DriftSpec(inputs=(name,), reference=2000, threshold=0.2, min_samples=500, window=60)
    stream = RouteDrift("r", spec, 1000.0, protocol).inputs
    assert stream is not None
    rng, clock = np.random.default_rng(5), Clock()
    for batch in batches(rng, 2000):
        feed(stream, encode(batch), clock)
    assert stream.reference is not None  # fitted from 2,000 rows, not requests
    assert stream.reference.names() == [f"{feature}[{i}]" for i in range(DIMS)]

    feed(stream, encode(rng.normal(size=(7, DIMS))), clock)  # a batch of 7 rows ...
    counts = stream.trackers[""].counts()
    assert {n: sum(c) for n, c in counts.items()} == {f"{feature}[{i}]": 7 for i in range(DIMS)}

    for i, batch in enumerate(batches(rng, 100_000)):
        feed(stream, encode(batch), clock)
        if i % 500 == 0:
            assert alarms(stream) == [], clock.rows
    assert alarms(stream) == []

    clock.tick(60 * 500)  # a minute later: the window holds only what comes next
    shifted = 0
    for batch in batches(rng, 2000, shift=1.0):
        shifted += feed(stream, encode(batch), clock)
        if alarms(stream):
            break
    assert alarms(stream) == [f"{feature}[{SHIFTED}]"], shifted
    print(f"\n{protocol}: alarm on {feature}[{SHIFTED}] alone after {shifted} shifted rows")
