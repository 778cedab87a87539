"""Hot reload on real files: valid edits apply, bad ones are refused once, renames count."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from pathlib import Path
from types import FrameType

import pytest

from router.config.reader import parse
from router.config.reload import ConfigWatcher, content_hash, diff_summary, parse_only
from router.config.spec import Config
from router.core.confkit import ConfigError
from router.wiring import prepare
from strategies.split import SplitSpec

TEMPLATE = """\
backends:
  a: {{url: http://127.0.0.1:8101}}
  b: {{url: http://127.0.0.1:8102}}
routes:
  - name: r
    match: {{path_prefix: /r}}
    strategy: {{split: {{weights: {{a: {a}, b: {b}}}}}}}
"""


def text(a: int, b: int) -> str:
    return TEMPLATE.format(a=a, b=b)


class Sink:
    """Collects what the watcher reports."""

    def __init__(self) -> None:
        self.configs: list[Config] = []
        self.errors: list[str] = []
        self.changed = asyncio.Event()

    def on_change(self, config: Config) -> None:
        self.configs.append(config)
        self.changed.set()

    def on_error(self, message: str) -> None:
        self.errors.append(message)


def weights(config: Config) -> object:
    spec = config.routes[0].strategy
    assert isinstance(spec, SplitSpec)
    return spec.weights


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text(90, 10))
    return path


def watcher_for(path: Path, sink: Sink) -> ConfigWatcher[Config]:
    current = content_hash(path.read_bytes())
    return ConfigWatcher(
        str(path), sink.on_change, sink.on_error, prepare=parse_only, current_hash=current
    )


async def test_unchanged_file_applies_nothing(cfg: Path) -> None:
    """Polling a file whose bytes match the serving config calls nobody, even after a touch."""
    sink = Sink()
    watcher = watcher_for(cfg, sink)
    assert not await watcher.check_now()
    os.utime(cfg)
    assert not await watcher.check_now()
    assert (sink.configs, sink.errors) == ([], [])


async def test_valid_edit_is_applied(cfg: Path) -> None:
    """Rewriting the file with new weights hands the new Config to on_change."""
    sink = Sink()
    watcher = watcher_for(cfg, sink)
    cfg.write_text(text(50, 50))
    assert await watcher.check_now()
    assert weights(sink.configs[-1]) == (("a", 5000), ("b", 5000))
    assert sink.configs[-1].source_hash == content_hash(cfg.read_bytes())
    assert not await watcher.check_now()  # the same bytes again: nothing new


async def test_bad_edit_refused_once_with_path_then_recovered(cfg: Path) -> None:
    """A bad edit reports its exact path once, applies nothing, and a later fix applies."""
    sink = Sink()
    watcher = watcher_for(cfg, sink)
    cfg.write_text(text(90, 140))
    assert not await watcher.check_now()
    cfg.write_text(text(90, 140))  # saved again, same bad bytes: no second report
    assert not await watcher.check_now()
    assert sink.errors == ["routes[0].strategy.split.weights.b: must be 0..100, got 140"]
    assert sink.configs == []
    cfg.write_text(text(80, 20))
    assert await watcher.check_now()
    assert weights(sink.configs[-1]) == (("a", 8000), ("b", 2000))


async def test_half_written_file_is_an_error_until_completed(cfg: Path) -> None:
    """A truncated write is refused as a parse error; the completing write applies."""
    sink = Sink()
    watcher = watcher_for(cfg, sink)
    full = text(70, 30)
    cfg.write_text(full[: full.index("strategy")])
    assert not await watcher.check_now()
    assert len(sink.errors) == 1
    cfg.write_text(full)
    assert await watcher.check_now()


async def test_rename_style_write_is_seen(cfg: Path) -> None:
    """An editor writing a temp file and renaming it over the config (new inode) is applied."""
    sink = Sink()
    watcher = watcher_for(cfg, sink)
    tmp = cfg.with_suffix(".swp")
    tmp.write_text(text(60, 40))
    os.replace(tmp, cfg)
    assert await watcher.check_now()
    assert weights(sink.configs[-1]) == (("a", 6000), ("b", 4000))


async def test_same_size_write_inside_one_timestamp_tick_is_seen(cfg: Path) -> None:
    """Two same-size writes with an identical mtime are told apart while the stamp is young."""
    sink = Sink()
    watcher = watcher_for(cfg, sink)
    cfg.write_text(text(91, 9))
    assert await watcher.check_now()
    stamp = os.stat(cfg)
    cfg.write_text(text(92, 8))  # same length, same inode
    os.utime(cfg, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # and the very same mtime
    assert await watcher.check_now()
    assert weights(sink.configs[-1]) == (("a", 9200), ("b", 800))


async def test_missing_file_is_skipped_silently(cfg: Path) -> None:
    """A briefly missing file reports nothing; its reappearance with new content applies."""
    sink = Sink()
    watcher = watcher_for(cfg, sink)
    cfg.unlink()
    assert not await watcher.check_now()
    assert sink.errors == []
    cfg.write_text(text(10, 90))
    assert await watcher.check_now()


async def test_failing_on_change_is_reported_not_raised(cfg: Path) -> None:
    """If applying the config raises, the watcher reports it through on_error and survives."""
    errors: list[str] = []

    def explode(config: Config) -> None:
        raise RuntimeError("table build failed")

    watcher = ConfigWatcher(str(cfg), explode, errors.append, prepare=parse_only, current_hash="x")
    assert not await watcher.check_now()
    assert len(errors) == 1
    assert "table build failed" in errors[0]


async def test_background_task_applies_edit_within_a_second(cfg: Path) -> None:
    """Once started, the watcher's own task picks up an edit in well under 1 s."""
    sink = Sink()
    watcher = ConfigWatcher(
        str(cfg), sink.on_change, sink.on_error, interval=0.05, prepare=parse_only
    )
    await watcher.start()
    try:
        assert [t for t in asyncio.all_tasks() if t.get_name().startswith("config-watcher")]
        await asyncio.sleep(0.1)
        assert sink.configs == []  # the file as loaded at start is not re-applied
        await asyncio.to_thread(cfg.write_text, text(75, 25))
        await asyncio.wait_for(sink.changed.wait(), timeout=1.0)
        assert weights(sink.configs[-1]) == (("a", 7500), ("b", 2500))
    finally:
        await watcher.stop()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("config-watcher")]


def test_diff_summary_lists_routes_backends_and_sections() -> None:
    """diff_summary names added, removed and changed backends and routes, and changed sections."""
    old = parse(text(90, 10))
    new = parse(
        "logging: {level: debug}\n"
        + text(50, 50)
        .replace("  b: {url: http://127.0.0.1:8102}", "  c: {url: http://127.0.0.1:8103}")
        .replace("b: 50", "c: 50")
        .replace("8101", "8111")
        + "  - {name: s, match: {path_prefix: /s}, strategy: {split: {weights: {a: 100}}}}\n"
    )
    assert diff_summary(old, new) == [
        "logging changed",
        "backend added: c",
        "backend removed: b",
        "backend changed: a (url, port)",
        "route added: s",
        "route changed: r (strategy)",
    ]
    assert diff_summary(old, parse(text(90, 10))) == []


def test_a_reload_builds_without_collections_and_turns_them_back_on() -> None:
    """router/wiring.py `prepare`: no cyclic GC while a big file is built (a full collection
    holds the event loop's GIL); the collector is on again afterwards, refused file or not."""
    collections: list[str] = []

    def count(phase: str, info: dict[str, int]) -> None:
        frame: FrameType | None = sys._getframe(1)
        while frame is not None and phase == "start":
            if frame.f_code is prepare.__code__:  # a collection inside prepare
                collections.append(phase)
                break
            frame = frame.f_back

    old = parse(text(100, 0))
    gc.callbacks.append(count)
    try:
        config, table, changes = prepare(_big(400), "c.yaml", old)
        during = len(collections)
        assert gc.isenabled()
        with pytest.raises(ConfigError):
            prepare(b"routes: [", "c.yaml", old)
        assert gc.isenabled()
    finally:
        gc.callbacks.remove(count)
    assert during == 0  # 400 routes allocate enough for several collections otherwise
    assert len(config.routes) == 401
    assert "route changed: r (strategy)" in changes
    assert table.by_name["r"].spec is config.routes[0]


def _big(routes: int) -> bytes:
    extra = "".join(
        f"  - {{name: x{i}, match: {{path_prefix: /x{i}}}, "
        f"strategy: {{split: {{weights: {{a: 100}}}}}}}}\n"
        for i in range(routes)
    )
    return (text(0, 100) + extra).encode()
