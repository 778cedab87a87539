"""Write (or check) the monitoring files made from code.

    python -m scripts.monitoring           # write them
    python -m scripts.monitoring --check   # exit 1 naming any file that differs

- deploy/grafana/deploy-router.json: the dashboard (scripts/dashboard.py);
- deploy/kubernetes/components/monitoring/prometheusrule.yaml: the groups of
  deploy/prometheus/rules.yml, as a PrometheusRule for the Prometheus Operator,
  so the two can never say different things.

tests/test_monitoring_files.py runs the check, so an edit of either source
without a run of this script fails the suite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from scripts.dashboard import build

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy/prometheus/rules.yml"
DASHBOARD = ROOT / "deploy/grafana/deploy-router.json"
PROMETHEUS_RULE = ROOT / "deploy/kubernetes/components/monitoring/prometheusrule.yaml"
HEADER = (
    "# Made by `python -m scripts.monitoring` from deploy/prometheus/rules.yml: edit that\n"
    "# file, then run it (tests check the two agree). The Prometheus Operator's rule\n"
    "# selector must match its labels (kube-prometheus-stack: release: <its name>).\n"
)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as `|` blocks, as a person writes them."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def dashboard_text() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def prometheus_rule_text() -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "deploy-router",
            "labels": {"app.kubernetes.io/name": "deploy-router"},
        },
        "spec": {"groups": groups},
    }
    body = yaml.dump(rule, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    return HEADER + body


def outputs() -> dict[Path, str]:
    return {DASHBOARD: dashboard_text(), PROMETHEUS_RULE: prometheus_rule_text()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.relative_to(ROOT))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{path} is not what scripts/monitoring.py makes: run python -m scripts.monitoring")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
