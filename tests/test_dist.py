"""The wheel: built with the locked tools, and interpreted (saying why) without a compiler.

The compiled wheel itself is built and run by `make dist` and by the image build
(`.ci/run`: the Containerfile fails unless `router --version` says compiled);
building it here would cost the suite a minute of mypyc.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from router import native

ROOT = Path(__file__).resolve().parent.parent


def locked_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {p["name"]: p["version"] for p in lock["package"] if "version" in p}


def test_build_requirements_are_the_locked_versions() -> None:
    """pip builds the sdist with what CI tested: [build-system] pins equal uv.lock, and
    mypy finds the runtime dependencies it type-checks against."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requires = pyproject["build-system"]["requires"]
    pins = dict(r.split("==") for r in requires if "==" in r)
    locked = locked_versions()
    assert set(pins) == {"setuptools", "mypy"}
    assert set(pyproject["project"]["dependencies"]) <= set(requires)
    for name, version in pins.items():
        assert locked[name] == version, (
            f"pyproject.toml [build-system] requires {name}=={version} but uv.lock has "
            f"{locked[name]}: set the pin to the locked version"
        )


def source_copy(tmp_path: Path) -> Path:
    """What the sdist holds, without anything compiled in place."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("*.so", "__pycache__")
    for package in ("router", "strategies"):
        shutil.copytree(ROOT / package, src / package, ignore=ignore)
    return src


def test_without_a_compiler_the_wheel_is_interpreted_and_says_why(tmp_path: Path) -> None:
    """No C compiler: the build goes on, prints make native's message, ships no .so."""
    src, out = source_copy(tmp_path), tmp_path / "wheels"
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc")}
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-build-isolation", "--no-deps",
         "-w", str(out), str(src)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = out.glob("*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")  # pure: nothing platform-specific in it
    names = zipfile.ZipFile(wheel).namelist()
    assert "router/dataplane/server.py" in names
    assert "router/ops/page/dashboard.js" in names  # package data: the dashboard page
    assert not [n for n in names if n.endswith(".so")]
    said = done.stdout + done.stderr
    assert "could not compile the data plane with mypyc" in said
    assert "no C compiler" in said
    assert "the router runs interpreted" in said


def test_router_version_says_how_the_data_plane_runs() -> None:
    """`router --version`: the installed version, and compiled or interpreted."""
    done = subprocess.run(
        [sys.executable, "-m", "router", "--version"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert done.stdout.strip() == f"router {version} (data plane {native.data_plane()})"
