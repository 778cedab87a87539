"""How `routerctl status ROUTE` shows a rollout: the ramp, the gates, and why.

Pure rendering of what the admin API returns: the route's entry (with its
rollout) and the latest verdicts the controller left for it (`analysis` in
/v1/status). Kept apart from router/ops/cli.py, which does the talking.
"""

from __future__ import annotations

from typing import Any

from router.ops.cli_views import table

BAR_WIDTH = 40
VERDICT_WORDS = {"pass": "PASS", "fail": "FAIL", "wait": "waiting for data"}


def progress_bar(weight_bp: int, steps: list[int]) -> str:
    """`[########................]  10% -> 50% -> 100%` with the current weight filled."""
    filled = round(BAR_WIDTH * max(0, min(weight_bp, 10_000)) / 10_000)
    marks = " -> ".join(f"{bp / 100:g}%" for bp in steps)
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}]  {weight_bp / 100:g}% now; steps {marks}"


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def gate_rows(gates: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["  GATE", "VERDICT", "VALUE", "THRESHOLD", "CANDIDATE N", "BASELINE N"]]
    for g in gates:
        verdict = VERDICT_WORDS.get(str(g.get("verdict")), str(g.get("verdict")))
        if g.get("dry_run"):
            verdict += " (dry run)"
        rows.append(
            [
                f"  {g.get('name')}",
                verdict,
                _figure(g.get("value")),
                _figure(g.get("threshold")),
                str(g.get("candidate_n", "-")),
                str(g.get("baseline_n", "-")),
            ]
        )
    return rows


def rollout_lines(entry: dict[str, Any], analysis: dict[str, Any] | None) -> list[str]:
    """The canary view of one route; [] when the route has no rollout."""
    r = entry.get("rollout")
    if not r or r.get("kind") != "canary":
        return []
    a = analysis or {}
    if r.get("phase") == "promoted":
        sides = f"{r.get('stable')} promoted; rollback target {r.get('previous_stable') or '-'}"
    else:
        sides = f"{r.get('stable')} (stable) vs {r.get('candidate')} (candidate)"
    lines = [f"rollout  {r.get('phase')}  revision {r.get('revision')}  {sides}"]
    if a.get("steps"):
        lines.append("ramp     " + progress_bar(int(r.get("weight_bp", 0)), a["steps"]))
    lines.append(f"why      {a.get('reason') or r.get('reason') or '-'}")
    gates = a.get("gates") or []
    if gates:
        lines += ["", *table(gate_rows(gates))]
        lines += [f"  {g.get('name')}: {g.get('detail')}" for g in gates if g.get("detail")]
    return lines
