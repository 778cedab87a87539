"""The wheel carries the request path compiled with mypyc; pyproject.toml says the rest.

`make dist`, `pip wheel .`, `uv build` or `pip install` of the sdist compile
the modules `router.native.COMPILED` names into one C extension group, as
`make native` does in place. Without a C compiler or the Python headers (or if
mypyc fails) the build prints the same message as `make native` and the wheel
holds the plain modules: the router runs interpreted, same behaviour, more CPU.

Editable installs (`make venv`, `pip install -e .`) compile nothing: the
checkout's data plane is `make native`'s, rebuilt when a source changes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from router import native  # noqa: E402  (standard library only, by design)


def can_compile() -> str | None:
    """None when this machine can compile the data plane, else why not."""
    try:
        native.check_toolchain()
        import mypyc.build  # noqa: F401  (a build requirement; absent without isolation)
    except (native.CannotCompile, ImportError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


WHY_NOT = can_compile()
if WHY_NOT is not None and "bdist_wheel" in sys.argv:  # a wheel without build_ext: say why
    print(native.HINT.format(why=WHY_NOT), file=sys.stderr)


# setuptools ships no type information (pyproject.toml: ignore_missing_imports)
class DataPlaneDistribution(Distribution):  # type: ignore[misc]
    def has_ext_modules(self) -> bool:
        # decided before any extension exists: a platform wheel when we will compile
        return WHY_NOT is None


class BuildDataPlane(build_ext):  # type: ignore[misc]
    """build_ext that compiles COMPILED with mypyc, or falls back to interpreted."""

    failed: str | None = None  # why mypyc could not make the extensions

    def finalize_options(self) -> None:
        # The extensions exist before setuptools finalizes them (it annotates each one);
        # mypycify runs mypy, so only for a real build, never for an editable install.
        if WHY_NOT is None and not self.distribution.ext_modules and not self._editable():
            try:
                self.distribution.ext_modules = self._mypycify()
            except SystemExit:  # mypy printed its errors and stopped
                self.failed = "mypy stopped on the errors printed above"
            except Exception as exc:
                self.failed = f"{type(exc).__name__}: {exc}"
        super().finalize_options()

    @staticmethod
    def _mypycify() -> list[object]:
        from mypyc.build import mypycify

        paths = [str(native.source_path(m).relative_to(ROOT)) for m in native.COMPILED]
        extensions: list[object] = mypycify(
            paths, opt_level="3", group_name=native.GROUP, target_dir="build/mypyc"
        )
        return extensions

    def _editable(self) -> bool:
        return bool(getattr(self, "editable_mode", False)) or "editable_wheel" in sys.argv

    def run(self) -> None:
        if self._editable():
            return  # the checkout's own `make native` builds in place
        if WHY_NOT is not None or self.failed is not None:
            print(native.HINT.format(why=WHY_NOT or self.failed), file=sys.stderr)
            return
        try:
            super().run()
        except (Exception, SystemExit) as exc:  # setuptools reports compiler failure by exit
            self._remove_built()
            print(native.HINT.format(why=f"{type(exc).__name__}: {exc}"), file=sys.stderr)
            return
        print(f"deploy-router: data plane compiled ({', '.join(native.COMPILED)})")

    def _remove_built(self) -> None:
        """Never ship half a build: a mix of compiled and plain modules."""
        self.extensions: list[object] = []
        build_lib = Path(self.build_lib)
        for module in [*native.COMPILED, native.GROUP + "__mypyc"]:
            parts = module.split(".")
            for path in build_lib.joinpath(*parts[:-1]).glob(f"{parts[-1]}.*.so"):
                path.unlink()


setup(distclass=DataPlaneDistribution, cmdclass={"build_ext": BuildDataPlane})
