"""README's Monitoring section says what the code does: its metric table lists exactly
the families the router exports, with their labels, and its alert table exactly the
alerts of deploy/prometheus/rules.yml."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from router.config.reader import parse
from router.ops.exposition import Family
from router.ops.exposition import parse as families
from router.wiring import Parts

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Monitoring"


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + 1)
    return text[start:end]


def table(first_column: str) -> dict[str, list[str]]:
    """Rows of the section's table whose header starts with `first_column`: name -> cells."""
    lines = section().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {first_column} |"))
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def exported() -> dict[str, Family]:
    config = parse((ROOT / "config.yaml").read_bytes(), source="config.yaml")
    return families(Parts("config.yaml", config, worker=0, reuse_port=False).telemetry.page())


def labels_of(fam: Family) -> set[str]:
    """The label names a family's samples carry (le of a histogram's buckets aside)."""
    names: set[str] = set()
    for key in fam.samples:
        names |= set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', key.partition("{")[2]))
    return names - {"le"}


def test_the_metric_table_lists_every_family_and_nothing_else() -> None:
    documented = table("metric")
    found = exported()
    assert sorted(documented) == sorted(found)
    for name, (kind, _, meaning) in documented.items():
        assert kind == found[name].kind, name
        assert meaning, name


def test_the_metric_table_names_the_labels_each_family_has() -> None:
    documented = table("metric")
    for name, fam in exported().items():
        said = {x.strip() for x in documented[name][1].split(",") if x.strip()}
        if fam.samples:  # families without a sample on this page say nothing of labels
            assert labels_of(fam) == said, name


def test_the_alert_table_lists_every_alert() -> None:
    groups = yaml.safe_load((ROOT / "deploy/prometheus/rules.yml").read_text())["groups"]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    documented = table("alert")
    assert set(documented) == alerts
    assert all(len(cells) == 2 and all(cells) for cells in documented.values())
