"""Compile the request path (`router.native.COMPILED`) in place with mypyc.

    python scripts/build_native.py            # build; on failure say why, run interpreted
    python scripts/build_native.py --require  # build or exit 1 (CI: ship what was tested)
    python scripts/build_native.py --remove   # delete the compiled modules

mypyc turns the same type-annotated modules into a C extension: attribute
access on our classes becomes a struct read and calls between the modules
become C calls, which is where an interpreted proxy spends its time. It needs
a C compiler and the Python headers (Debian: `gcc python3-dev`); without them
the build fails here, with the compiler's message, and the router runs the
`.py` files instead (slower, same behaviour).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.native import (  # noqa: E402
    COMPILED,
    GROUP,
    HINT,
    check_toolchain,
    extension_path,
    source_path,
)


def remove() -> None:
    """Delete every compiled file of ours (the group library included)."""
    for module in [*COMPILED, GROUP + "__mypyc"]:
        source = source_path(module)
        for path in source.parent.glob(f"{source.stem}.*.so"):
            path.unlink()


def build() -> None:
    check_toolchain()
    # Imported here so that `--remove` and the failure hint work without mypy installed.
    from mypyc.build import mypycify
    from setuptools import Distribution

    paths = [str(source_path(m).relative_to(ROOT)) for m in COMPILED]
    extensions = mypycify(paths, opt_level="3", group_name=GROUP, target_dir="build/mypyc")
    # A bare Distribution, not setup(): setup() would read pyproject.toml and treat this
    # as a build of the whole project.
    dist = Distribution({"name": "deploy-router-dataplane", "ext_modules": extensions})
    # --force: a shim whose C did not change would otherwise keep its old mtime and
    # look stale to router.native.stale().
    dist.script_args = [
        "-q",
        "build_ext",
        "--inplace",
        "--force",
        "--build-temp",
        "build/mypyc/temp",
    ]
    dist.parse_command_line()
    dist.run_commands()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--require", action="store_true", help="fail if it cannot compile")
    parser.add_argument("--remove", action="store_true", help="delete the compiled modules")
    parser.add_argument(
        "--stamp",
        type=Path,
        help="touch this file once compiled (make's record; kept absent "
        "after a failure, so the next `make` tries again: say, once gcc is installed)",
    )
    args = parser.parse_args()
    os.chdir(ROOT)
    remove()  # never leave a mix of old and new modules behind
    if args.remove:
        return 0
    try:
        build()
    except (Exception, SystemExit) as exc:  # setuptools reports compiler failure by SystemExit
        remove()
        print(HINT.format(why=f"{type(exc).__name__}: {exc}"), file=sys.stderr)
        return 1 if args.require else 0
    missing = [m for m in COMPILED if extension_path(m) is None]
    if missing:
        remove()
        print(HINT.format(why=f"no module built for {', '.join(missing)}"), file=sys.stderr)
        return 1 if args.require else 0
    print(f"deploy-router: data plane compiled ({', '.join(COMPILED)})")
    if args.stamp is not None:
        args.stamp.parent.mkdir(parents=True, exist_ok=True)
        args.stamp.touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
