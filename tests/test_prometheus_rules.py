"""deploy/prometheus: the rules load, their unit tests pass, and those tests can fail.

`make test` runs promtool on the files too; here each alert's expression is
broken in turn (it never fires) and `promtool test rules` must then fail on that
alert: a test file whose cases pass whatever the expression says proves nothing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.prometheus import NOT_INSTALLED, binary

RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULES = RULES_DIR / "rules.yml"
TESTS = RULES_DIR / "rules_test.yml"
NEVER = "vector(1) == 0"  # parses, returns nothing: an alert that can never fire


def promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess[str]:
    exe = binary("promtool")
    if exe is None:
        pytest.skip(NOT_INSTALLED.format("promtool"))
    return subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )


def groups() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return found


def alerts() -> list[dict[str, Any]]:
    return [r for g in groups() for r in g["rules"] if "alert" in r]


def test_rules_load_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_firing_and_a_quiet_case_and_says_what_to_do() -> None:
    cases = yaml.safe_load(TESTS.read_text())["tests"]
    evals = [e for case in cases for e in case.get("alert_rule_test", [])]
    for rule in alerts():
        mine = [e for e in evals if e["alertname"] == rule["alert"]]
        assert any(e["exp_alerts"] for e in mine), f"{rule['alert']}: no case fires it"
        assert any(not e["exp_alerts"] for e in mine), f"{rule['alert']}: no quiet case"
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert {"summary", "description"} <= rule["annotations"].keys()


@pytest.mark.parametrize("name", [r["alert"] for r in alerts()])
def test_an_alert_whose_expression_breaks_fails_its_tests(tmp_path: Path, name: str) -> None:
    broken = groups()
    for g in broken:
        for rule in g["rules"]:
            if rule.get("alert") == name:
                rule["expr"] = NEVER
    (tmp_path / RULES.name).write_text(yaml.safe_dump({"groups": broken}, sort_keys=False))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    tested = promtool("test", "rules", TESTS.name, cwd=tmp_path)
    assert tested.returncode != 0
    assert f"alertname: {name}," in tested.stdout + tested.stderr
