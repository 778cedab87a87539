"""CPU time and memory of a process tree, read from /proc (Linux only).

CPU per request is the steadiest figure on a shared 2-core machine: it does
not depend on how the scheduler split the cores between wrk, the backend and
the proxy. We sum utime + stime (fields 14 and 15 of /proc/PID/stat, in clock
ticks) over a process and its live descendants, so a router with workers or
an nginx master with its worker are both measured whole.
"""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    # comm (field 2) may hold spaces or parentheses: split after its closing ')'.
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    rest = _stat_fields(pid)  # rest[0] is field 3 (state)
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    """Direct children of `pid`, found by their parent id."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int(_stat_fields(int(entry.name))[1]) == pid:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # the process exited while we looked
    return found


def tree(pid: int) -> list[int]:
    """`pid` and all its live descendants."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(children(current))
    return pids


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            total += cpu_seconds(p)
        except OSError:
            continue
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size (VmRSS) of one process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for pid {pid}")


def tree_rss_bytes(pid: int) -> int:
    return sum(rss_bytes(p) for p in tree(pid))
