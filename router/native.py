"""Which modules of the request path run compiled, and whether a build is stale.

`make` compiles the data plane (`COMPILED`) with mypyc from the same typed
Python: on this machine that took the router from ~28 to ~20 µs of CPU per
proxied request. Python imports an extension module in preference to the
`.py` beside it, so a source edited after the build would silently not run:
`stale()` finds those, the router warns about them at start and the test
suite refuses to run on them. Without a C compiler the build is skipped and
everything runs interpreted, with the same behaviour.

The same modules are compiled into the wheel (setup.py, `make dist`); the
build's toolchain check and the message when it fails live here, so that
`make native` and `pip install` of the sdist say the same thing.

Nothing here imports the modules it inspects (the test suite asks before any
of them is loaded), nor anything outside the standard library (setup.py
imports this module before its build requirements are known to be there).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import sysconfig
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The request path, compiled: every module of these folders (what a proxied request
# executes per byte and per header, and the strategies that decide it).
COMPILED_DIRS = ("router/dataplane", "strategies")


def _modules_in(folder: str) -> list[str]:
    """The modules of a folder, from their sources or (in a wheel) their extensions."""
    found = set()
    for path in (ROOT / folder).iterdir():
        name = path.name.split(".", 1)[0]
        if name.startswith("_") or not (path.suffix == ".py" or path.name.endswith(_EXT)):
            continue
        found.add(f"{folder.replace('/', '.')}.{name}")
    return sorted(found)


_EXT = tuple(EXTENSION_SUFFIXES)
COMPILED = tuple(m for folder in COMPILED_DIRS for m in _modules_in(folder))

# The shared library mypyc puts the compiled group in (`<name>__mypyc` is its module).
GROUP = "router._dataplane"

HINT = (
    "deploy-router: could not compile the data plane with mypyc ({why});\n"
    "  the router runs interpreted (same behaviour, ~40 % more CPU per request).\n"
    "  On Debian/Ubuntu: apt-get install gcc python3-dev, then `make native`."
)


class CannotCompile(Exception):
    """What this machine lacks to compile, found before mypyc spends its ~15 s."""


def check_toolchain() -> None:
    """Raise CannotCompile naming the missing compiler or Python headers."""
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        raise CannotCompile(f"no C compiler ({compiler!r} is not on PATH)")
    include = Path(sysconfig.get_paths()["include"])
    if not (include / "Python.h").exists():
        raise CannotCompile(f"no Python headers ({include / 'Python.h'} is missing)")


def installed_version() -> str:
    try:
        return importlib.metadata.version("deploy-router")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout without install
        return "(not installed)"


def in_checkout() -> bool:
    """Running from a source tree (make native builds in place), not an installed wheel."""
    return (ROOT / "pyproject.toml").exists()


def source_path(module: str) -> Path:
    """The `.py` file of `module` in this checkout."""
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


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
    """Compiled modules whose source changed after the build (they would run old code).

    Only in a checkout: a wheel's files all get the install's time, in any order."""
    if modules is COMPILED and not in_checkout():
        return []
    out = []
    for module in modules:
        ext = extension_path(module)
        if ext is None:
            continue
        source = ext.with_name(module.rsplit(".", 1)[-1] + ".py")
        if source.exists() and source.stat().st_mtime > ext.stat().st_mtime:
            out.append(module)
    return out
