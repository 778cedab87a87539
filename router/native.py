"""Which modules of the request path run compiled, and whether a build is stale.

`make` compiles the data plane (`COMPILED`) with mypyc from the same typed
Python: on this machine that took the router from ~28 to ~20 µs of CPU per
proxied request. Python imports an extension module in preference to the
`.py` beside it, so a source edited after the build would silently not run:
`stale()` finds those, the router warns about them at start and the test
suite refuses to run on them. Without a C compiler the build is skipped and
everything runs interpreted, with the same behaviour.

Nothing here imports the modules it inspects (the test suite asks before any
of them is loaded).
"""

from __future__ import annotations

import importlib.util
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

# The request path: what a proxied request executes per byte and per header.
COMPILED = (
    "router.http1",
    "router.server",
    "router.upstream",
    "router.proxy",
    "router.shadow_copy",
    "router.stream_timing",
    "router.hashing",
    "router.routing",
    "router.metrics",
    "strategies.base",
    "strategies.split",
    "strategies.shadow",
    "strategies.canary",
    "strategies.bluegreen",
    "strategies.automation",
)

# The shared library mypyc puts the compiled group in (`<name>__mypyc` is its module).
GROUP = "router._dataplane"


def source_path(module: str) -> Path:
    """The `.py` file of `module` in this checkout."""
    root = Path(__file__).resolve().parent.parent
    return root.joinpath(*module.split(".")).with_suffix(".py")


def extension_path(module: str) -> Path | None:
    """The compiled file Python would import for `module`, or None if it imports the `.py`."""
    spec = importlib.util.find_spec(module)
    origin = spec.origin if spec is not None else None
    if origin is None or not origin.endswith(tuple(EXTENSION_SUFFIXES)):
        return None
    return Path(origin)


def data_plane() -> str:
    """ "compiled", "interpreted", or "mixed" (some modules built, some not: a broken build)."""
    built = [extension_path(m) is not None for m in COMPILED]
    if all(built):
        return "compiled"
    return "mixed" if any(built) else "interpreted"


def stale(modules: tuple[str, ...] = COMPILED) -> list[str]:
    """Compiled modules whose source changed after the build (they would run old code)."""
    out = []
    for module in modules:
        ext = extension_path(module)
        if ext is None:
            continue
        source = ext.with_name(module.rsplit(".", 1)[-1] + ".py")
        if source.exists() and source.stat().st_mtime > ext.stat().st_mtime:
            out.append(module)
    return out
