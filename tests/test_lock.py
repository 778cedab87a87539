"""The lock: the venv holds exactly uv.lock, and a stale lock stops `make venv`.

A fresh clone must test what CI tested; a dependency range edited without
re-locking must fail loudly, naming the command that fixes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
UV = ROOT / ".uv" / "bin" / "uv"


def _uv() -> str:
    assert UV.exists(), "uv is missing: `make venv` installs it (.uv/bin/uv)"
    return str(UV)


def locked_for_this_python() -> set[str]:
    """`name==version` of every locked package whose markers hold here (the project excluded)."""
    out = subprocess.run(
        [_uv(), "export", "--frozen", "--no-hashes", "--no-emit-project", "--all-groups",
         "--no-header", "--no-annotate"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    pins = set()
    for line in out.splitlines():
        if not line or line.startswith(("#", " ")):
            continue
        requirement, _, marker = line.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        name, _, version = requirement.strip().partition("==")
        pins.add(f"{canonicalize_name(name)}=={version}")
    return pins


def installed() -> set[str]:
    """`name==version` of every distribution in this venv, as `pip freeze --all` lists it."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True
    ).stdout
    pins = set()
    for line in out.splitlines():
        if line.startswith(("#", "-e ")):  # the project itself, installed editable
            continue
        name, _, version = line.partition("==")
        pins.add(f"{canonicalize_name(name)}=={version}")
    return pins


def test_the_venv_holds_exactly_the_lock() -> None:
    """Nothing more, nothing less, no other version: what CI tested is what runs."""
    locked, present = locked_for_this_python(), installed()
    assert present - locked == set(), "installed but not locked (or another version)"
    assert locked - present == set(), "locked but not installed"
    assert "redis==" in " ".join(locked)  # the export was read, not an empty set compared


def _project_copy(tmp_path: Path) -> Path:
    """Makefile, pyproject.toml, uv.lock and the uv pin in a scratch folder."""
    copy = tmp_path / "project"
    (copy / "scripts").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml", "uv.lock", "README.md", "scripts/uv.txt"):
        shutil.copy2(ROOT / name, copy / name)
    # uv.txt no newer than our uv, so make uses ours instead of installing another.
    os.utime(copy / "scripts" / "uv.txt", (0, 0))
    return copy


def _make(copy: Path, target: str) -> subprocess.CompletedProcess[str]:
    """`make TARGET` in the copy with our uv and none of the outer make's uv settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    return subprocess.run(
        ["make", "--no-print-directory", target, f"UV={_uv()}"],
        cwd=copy, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def test_a_range_edited_without_relocking_stops_make_venv(tmp_path: Path) -> None:
    """One line naming `make lock`; no venv made from an unlocked resolution."""
    copy = _project_copy(tmp_path)
    pyproject = copy / "pyproject.toml"
    text = pyproject.read_text()
    assert '"aiohttp>=3.9",' in text
    pyproject.write_text(text.replace('"aiohttp>=3.9",', '"aiohttp>=3.9,<3.10",'))
    done = _make(copy, "venv")
    assert done.returncode != 0
    message = [line for line in done.stderr.splitlines() if "uv.lock" in line]
    assert len(message) == 1, done.stderr
    assert "make lock" in message[0]
    assert not (copy / ".venv").exists()


def test_the_unedited_lock_passes_the_same_check(tmp_path: Path) -> None:
    """The control: the same copy, unedited, passes the check `make venv` runs first."""
    copy = _project_copy(tmp_path)
    done = _make(copy, "lock-check")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
