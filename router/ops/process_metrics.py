"""The standard `process_*` families of Prometheus, read from /proc when scraped.

The names and meanings every Prometheus client library exports (CPU seconds,
resident and virtual memory, open and maximum file descriptors, start time), so
the usual process dashboards and alerts work on the router. Read at scrape
time only; on a system without /proc nothing is exported. With `--workers N`
worker 0 adds the other workers' CPU, memory and descriptors
(router/ops/exposition.py); the start time and the limit are worker 0's.
"""

from __future__ import annotations

import os
import resource
from functools import cache

from router.dataplane.metric_text import metric_lines

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@cache
def _boot_time() -> float:
    with open("/proc/stat", encoding="ascii") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


def process_lines() -> list[str]:
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            stat = f.read().rpartition(")")[2].split()  # after "(comm)": field 3 on
        fds = len(os.listdir("/proc/self/fd"))
        boot = _boot_time()
    except OSError:
        return []
    # /proc/<pid>/stat fields, numbered from 1: utime 14, stime 15, starttime 22,
    # vsize 23, rss 24 (pages); `stat` begins at field 3
    cpu = (int(stat[11]) + int(stat[12])) / _TICKS
    start = boot + int(stat[19]) / _TICKS
    vsize, rss = int(stat[20]), int(stat[21]) * _PAGE
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return [
        *_one("process_cpu_seconds_total", "counter", "User and system CPU time spent.", cpu),
        *_one("process_resident_memory_bytes", "gauge", "Resident memory size.", rss),
        *_one("process_virtual_memory_bytes", "gauge", "Virtual memory size.", vsize),
        *_one("process_start_time_seconds", "gauge", "Start time since the epoch.", start),
        *_one("process_open_fds", "gauge", "Open file descriptors.", fds),
        *_one("process_max_fds", "gauge", "Maximum open file descriptors.", soft),
    ]


def _one(name: str, kind: str, text: str, value: float) -> list[str]:
    return metric_lines(name, kind, text, [({}, value)])
