"""Reading YAML into specs with errors that name their exact path.

Every reader method records a problem as `path: message, got value` and returns
a default instead of raising, so one pass over a file reports every error at
once (`routerctl validate` prints them all). The caller raises `ConfigError`
at the end when `errors` is not empty. Unknown keys are errors: a typo must not
pass silently, so each mapping is closed with `done()`.
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|k|mb|mib|m|gb|gib|g)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
}


# Bounds every duration and size obeys unless its reader says otherwise: below a
# millisecond or beyond a week a duration is a typo, as is a size beyond 1 GiB.
MIN_DURATION = 0.001
MAX_DURATION = 7 * 24 * 3600.0
MAX_SIZE = 1024**3
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
RESERVED_HEADERS = frozenset(
    {
        "host", "content-length", "transfer-encoding", "connection", "keep-alive",
        "upgrade", "te", "trailer", "proxy-connection", "expect",
    }
)  # fmt: skip


def _span(seconds: float) -> str:
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms"


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n} bytes"


class ConfigError(Exception):
    """A config that cannot be used; `errors` lists every problem with its path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict = 3, 6, 6
    short.maxstring = short.maxother = 80
    return short


_SHOW = _short_repr()


def show(value: object) -> str:
    """A value as the user wrote it, short enough for one line. Bounded in work as
    well as in length: a value may be a huge nested list (router/config/yamlload.py)."""
    text = _SHOW.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_duration(value: object) -> float | None:
    """`30s`, `5m`, `250ms`, `1h` or a bare number of seconds; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        # YAML .inf and .nan are floats too; neither is a usable timeout
        return float(value) if 0 <= value < math.inf else None
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    return None


def parse_size(value: object) -> int | None:
    """`512`, `64KiB`, `10MB`, `1m`; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and (m := _SIZE.match(value)):
        unit = m.group(2).lower() if m.group(2) else None
        return int(m.group(1)) * _SIZE_UNITS[unit]
    return None


class Node:
    """One YAML mapping being read, with its path and the shared error list."""

    def __init__(self, value: object, path: str, errors: list[str]) -> None:
        self.path = path
        self.errors = errors
        self.ok = isinstance(value, dict)
        self.data: dict[str, object] = value if isinstance(value, dict) else {}
        self.seen: set[str] = set()
        if not self.ok and value is not None:
            self.error(path, "must be a mapping", value)

    # -- bookkeeping -------------------------------------------------------
    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, path: str, message: str, value: object = ...) -> None:
        got = "" if value is ... else f", got {show(value)}"
        self.errors.append(f"{path}: {message}{got}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> object:
        self.seen.add(key)
        return self.data.get(key)

    def keys(self) -> Iterator[str]:
        return iter(self.data)

    def done(self) -> None:
        """Report every key that no reader asked for: a typo is an error."""
        for key in self.data:
            if key not in self.seen:
                self.error(self.sub(str(key)), "unknown key")

    # -- typed readers -----------------------------------------------------
    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str:
        value = self.raw(key)
        if value is None:
            if required:
                self.error(self.sub(key), "is required")
            return default or ""
        if not isinstance(value, str) or not value:
            self.error(self.sub(key), "must be a non-empty string", value)
            return default or ""
        return value

    def opt_string(self, key: str) -> str | None:
        if self.raw(key) is None:
            return None
        return self.string(key) or None

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(self.sub(key), "must be true or false", value)
            return default
        return value

    def number(self, key: str, default: float, lo: float, hi: float) -> float:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            self.error(self.sub(key), f"must be a number in {lo:g}..{hi:g}", value)
            return default
        return float(value)

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.error(self.sub(key), f"must be an integer in {lo}..{hi}", value)
            return default
        return value

    def duration(
        self,
        key: str,
        default: float,
        *,
        positive: bool = True,
        lo: float = MIN_DURATION,
        hi: float = MAX_DURATION,
    ) -> float:
        """A duration within lo..hi (0 also allowed when not `positive`)."""
        value = self.raw(key)
        if value is None:
            return default
        seconds = parse_duration(value)
        if seconds is None or (positive and seconds <= 0):
            self.error(self.sub(key), "must be a duration like 500ms, 30s, 5m or 1h", value)
            return default
        if not (lo <= seconds <= hi or (seconds == 0 and not positive)):
            self.error(self.sub(key), f"must be {_span(lo)}..{_span(hi)}", value)
            return default
        return seconds

    def size(self, key: str, default: int, *, hi: int = MAX_SIZE) -> int:
        value = self.raw(key)
        if value is None:
            return default
        size = parse_size(value)
        if size is None:
            self.error(self.sub(key), "must be a size like 512, 64KiB or 10MiB", value)
            return default
        if size > hi:
            self.error(self.sub(key), f"must be at most {_bytes(hi)}", value)
            return default
        return size

    def header(self, key: str, default: str | None = None) -> str | None:
        """A header name (lower case) the router may read or set: never one that frames
        the message or belongs to one hop (Host, Content-Length, Connection, ...)."""
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, str) or not _HEADER.match(value):
            self.error(self.sub(key), "must be a header name", value)
            return default
        if value.lower() in RESERVED_HEADERS:
            self.error(self.sub(key), "must not be a header that frames or routes the message "
                       f"({', '.join(sorted(RESERVED_HEADERS))})", value)  # fmt: skip
            return default
        return value.lower()

    def readable_file(self, key: str) -> str | None:
        """A path to a file the router can read now (certificates, tokens, references)."""
        path = self.opt_string(key)
        if path is None:
            return None
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            self.error(self.sub(key), f"cannot read file: {exc.strerror or exc}", path)
        return path

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.raw(key)
        if value is None:
            return default
        if value not in allowed:
            self.error(self.sub(key), f"must be one of {', '.join(allowed)}", value)
            return default
        return str(value)

    def mapping(self, key: str, *, required: bool = False) -> Node:
        value = self.raw(key)
        if value is None and required:
            self.error(self.sub(key), "is required")
        return Node(value, self.sub(key), self.errors)

    def items(self, key: str, *, required: bool = False) -> list[tuple[str, object]]:
        """A list under `key` as (path, item) pairs; a scalar or mapping is an error."""
        value = self.raw(key)
        if value is None:
            if required:
                self.error(self.sub(key), "is required")
            return []
        if not isinstance(value, list):
            self.error(self.sub(key), "must be a list", value)
            return []
        return [(f"{self.sub(key)}[{i}]", item) for i, item in enumerate(value)]


_BP_SLACK = 1e-6  # float slack when checking "at most two decimals"


def basis_points(node: Node, path: str, value: object) -> int | None:
    """A percentage 0..100 with at most two decimals, as basis points (0.01 % steps);
    None, with an error at `path`, when it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        node.error(path, "must be 0..100", value)
        return None
    bp = round(value * 100)
    if abs(value * 100 - bp) > _BP_SLACK:
        node.error(path, "must have at most two decimals (0.01 % steps)", value)
        return None
    return bp
