"""The request path's small helpers that replace library calls: same answers, every time."""

from __future__ import annotations

import bisect
import os
import re

from hypothesis import given
from hypothesis import strategies as st

from router.dataplane import http1
from router.dataplane.http1 import _LENGTH_LINES_MAX, length_line, new_request_id
from router.dataplane.metrics import BOUNDS, bucket_of


@given(st.floats(min_value=0.0, max_value=1e6, allow_nan=False))
def test_bucket_of_is_bisect_left(seconds: float) -> None:
    assert bucket_of(seconds) == bisect.bisect_left(BOUNDS, seconds)


def test_bucket_of_at_and_around_every_bound() -> None:
    """Exactly on a bound goes in that bound's bucket, as bisect_left puts it."""
    for bound in BOUNDS:
        for x in (bound, bound * (1 - 1e-12), bound * (1 + 1e-12)):
            assert bucket_of(x) == bisect.bisect_left(BOUNDS, x)
    assert bucket_of(0.0) == 0
    assert bucket_of(1e9) == len(BOUNDS)


def test_request_ids_stay_unique_and_well_formed_across_the_table_wrap() -> None:
    """28 hex digits, one process prefix, a counter that keeps counting past 4096 ids."""
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{28}", i) for i in ids)
    assert len({i[:16] for i in ids}) == 1
    counters = [int(i[16:], 16) for i in ids]
    assert counters == list(range(counters[0], counters[0] + len(ids)))


def test_a_forked_worker_draws_its_own_request_id_prefix() -> None:
    """`router --workers N` forks after importing http1: a child's ids never repeat the
    parent's (or a sibling's), though every process starts its counter at 1."""
    parent = new_request_id()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write one id and leave without running pytest's exit code
        os.write(w, new_request_id().encode())
        os._exit(0)
    os.close(w)
    child = os.read(r, 64).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert re.fullmatch(r"[0-9a-f]{28}", child)
    assert child[:16] != parent[:16]
    assert int(child[16:], 16) == 1


def test_length_line_is_the_formatted_header_and_its_memory_is_bounded() -> None:
    for n in (0, 1, 49, 1024, 10**9, *range(2 * _LENGTH_LINES_MAX)):
        assert length_line(n) == b"content-length: %d\r\n" % n
    assert len(http1._LENGTH_LINES) <= _LENGTH_LINES_MAX
