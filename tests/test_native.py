"""The compiled data plane: the build list, the stale-build guard, what CI ships."""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from router import native

ROOT = Path(__file__).resolve().parent.parent


def test_makefile_rebuilds_on_every_compiled_source() -> None:
    """`make` must watch the folders that are compiled, or an edit would run stale code."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^NATIVE_SRC\s*:=(.*)$", text, re.MULTILINE)
    assert match is not None
    watched = re.findall(r"\$\(wildcard ([\w/]+)/\*\.py\)", match.group(1))
    assert tuple(watched) == native.COMPILED_DIRS
    for folder in native.COMPILED_DIRS:  # and COMPILED is every module there
        found = {p.stem for p in (ROOT / folder).glob("*.py") if p.stem != "__init__"}
        assert {
            m.rsplit(".", 1)[1]
            for m in native.COMPILED
            if m.startswith(folder.replace("/", ".") + ".")
        } == found


def test_the_build_is_whole() -> None:
    """Never half compiled; and compiled whenever the build was required (CI)."""
    plane = native.data_plane()
    assert plane != "mixed"
    if os.environ.get("NATIVE_REQUIRED"):
        assert plane == "compiled"
        for module in native.COMPILED:  # and it is what the tests import
            path = str(importlib.import_module(module).__file__)
            assert path.endswith(tuple(EXTENSION_SUFFIXES))


@dataclass
class Built:
    """A package with `mod.py` and a (never loaded) compiled `mod` beside it."""

    module: str
    source: Path
    ext: Path


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Built:
    name = f"fakepkg_{tmp_path.name}"  # unique: find_spec imports (and keeps) the package
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    source, ext = pkg / "mod.py", pkg / f"mod{EXTENSION_SUFFIXES[0]}"
    source.write_text("X = 1\n")
    ext.write_bytes(b"")
    os.utime(source, (1_000_000, 1_000_000))
    os.utime(ext, (2_000_000, 2_000_000))
    monkeypatch.syspath_prepend(str(tmp_path))
    return Built(f"{name}.mod", source, ext)


def test_stale_finds_a_source_edited_after_the_build(built: Built) -> None:
    assert native.extension_path(built.module) == built.ext
    assert native.stale((built.module,)) == []
    os.utime(built.source, (3_000_000, 3_000_000))  # edited after the build
    assert native.stale((built.module,)) == [built.module]


def test_interpreted_modules_are_never_stale(built: Built) -> None:
    built.ext.unlink()
    assert native.extension_path(built.module) is None
    assert native.stale((built.module,)) == []
