"""routerctl's verbs: their arguments, their help, and the route actions as data.

`build_parser` is given the functions that run each verb (router/ops/cli.py);
`routerctl VERB --help` prints the texts below, which the README quotes.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    Verbs = argparse._SubParsersAction[argparse.ArgumentParser]  # subscriptable for mypy only

DEFAULT_ADMIN = "http://127.0.0.1:9901"
Command = Callable[..., int]  # (Api, the parsed arguments) -> exit code: router/ops/cli.py


@dataclass(frozen=True, slots=True)
class ActionVerb:
    name: str
    help: str
    flag: str | None = None  # an optional --flag sent as {"<flag>": true}
    flag_help: str = ""


ACTIONS: tuple[ActionVerb, ...] = (
    ActionVerb(
        "promote",
        "Move ROUTE's rollout to its next step now, without waiting for the step's pause.",
        "full",
        "skip the remaining steps: make the candidate the stable backend at 100 %%",
    ),
    ActionVerb("pause", "Hold ROUTE's rollout at its current step and weight until resume."),
    ActionVerb("resume", "Let a paused rollout of ROUTE continue from where it was held."),
    ActionVerb(
        "abort",
        "Stop ROUTE's rollout: all traffic back to the stable backend on every replica; "
        "stays aborted until a new revision or `retry`.",
    ),
    ActionVerb("retry", "Restart an aborted rollout of ROUTE from its first step."),
    ActionVerb(
        "rollback",
        "Undo ROUTE's last change: a running rollout is aborted, a promoted one returns "
        "to the previous stable backend, blue/green returns to the previous colour.",
    ),
    ActionVerb(
        "switch",
        "Blue/green: send all of ROUTE's traffic to the idle colour at once.",
        "force",
        "switch even if the idle colour's health check is failing",
    ),
)


def build_parser(commands: Mapping[str, Command]) -> argparse.ArgumentParser:
    """routerctl's arguments; each verb runs `commands[word]` (router/ops/cli.py)."""
    parser = argparse.ArgumentParser(
        prog="routerctl",
        description="Inspect and steer a running deploy-router through its admin API.",
    )
    parser.add_argument(
        "--admin",
        default=os.environ.get("ROUTERCTL_ADMIN", DEFAULT_ADMIN),
        help="admin API base URL (env ROUTERCTL_ADMIN; default %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("ROUTER_ADMIN_TOKEN"),
        help="bearer token: a viewer's reads, an operator's changes (env ROUTER_ADMIN_TOKEN)",
    )
    verbs = parser.add_subparsers(dest="command", required=True, metavar="VERB")
    _add_status(verbs, commands)
    _add_validate(verbs, commands)
    _add_history(verbs, commands)
    _add_diffs(verbs, commands)
    _add_drift(verbs, commands)
    _add_automation(verbs, commands)
    _add_export(verbs, commands)
    for verb in ACTIONS:
        _add_action(verbs, commands, verb)
    return parser


def _add_status(verbs: Verbs, commands: Mapping[str, Command]) -> None:
    text = (
        "Show every route (or ROUTE): strategy, share of traffic per backend, rollout "
        "phase/step/weight; the config hash and load time, the last refused reload in "
        "full, and the state store. For one canary ROUTE also the ramp as a progress "
        "bar, each gate with its figures and verdict, and in plain words why the "
        "rollout is where it is; for a mirrored ROUTE, agreement per field and drops; "
        "for a ROUTE with streamed answers (SSE), time to first token and inter-token "
        "p50/p95, tokens and total time per arm (primary and shadow). "
        "Exits 1 if a shown rollout is aborted."
    )
    p = verbs.add_parser("status", help=text, description=text)
    p.add_argument("route", nargs="?", metavar="ROUTE", help="only this route")
    p.add_argument("--json", action="store_true", help="print the admin API's JSON as is")
    p.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=2.0,
        default=0.0,
        metavar="SECONDS",
        help="redraw every SECONDS (default 2) until Ctrl-C",
    )
    p.set_defaults(func=commands["status"])


def _add_export(verbs: Verbs, commands: Mapping[str, Command]) -> None:
    text = (
        "Write ROUTE's captured records of the last --since, joined with their delayed "
        "labels: one JSON line per request, one per item for a batch (inputs, outputs, "
        "each shadow's outputs, the label), ready to retrain on or to score the candidate "
        "offline. Reads the route's file sink (a viewer token is enough). Parquet needs "
        "pyarrow (the optional `parquet` extra)."
    )
    p = verbs.add_parser("export", help=text, description=text)
    p.add_argument("route", metavar="ROUTE")
    p.add_argument("--since", default="1h", help="how far back, e.g. 30m, 1h, 168h (default 1h)")
    p.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
    p.add_argument("--output", "-o", metavar="FILE", help="write here (default: stdout)")
    p.set_defaults(func=commands["export"])


def _add_validate(verbs: Verbs, commands: Mapping[str, Command]) -> None:
    text = (
        "Check a config file locally (no router needed): print 'OK: FILE', or each error "
        "with its exact path and exit 1. Warns (exit 0) when a route's compared or watched "
        "names do not fit its protocol, e.g. a V2 answer read by JSON path."
    )
    p = verbs.add_parser("validate", help=text, description=text)
    p.add_argument("file", metavar="FILE", help="path of the config.yaml to check")
    p.set_defaults(func=commands["validate"])


def _add_history(verbs: Verbs, commands: Mapping[str, Command]) -> None:
    text = "Show ROUTE's rollout history, oldest first: time, actor, event, reason."
    p = verbs.add_parser("history", help=text, description=text)
    p.add_argument("route", metavar="ROUTE")
    p.add_argument("-n", type=int, default=20, help="how many newest entries (default 20)")
    p.add_argument("--json", action="store_true", help="print the entries as JSON")
    p.set_defaults(func=commands["history"])


def _add_diffs(verbs: Verbs, commands: Mapping[str, Command]) -> None:
    text = (
        "Show ROUTE's sampled disagreements between the primary and its shadows, newest "
        "first: request id, status and latency of both, the differing fields, both answers."
    )
    p = verbs.add_parser("diffs", help=text, description=text)
    p.add_argument("route", metavar="ROUTE")
    p.add_argument("-n", type=int, default=20, help="how many newest samples (default 20)")
    p.add_argument("--json", action="store_true", help="print the samples as JSON")
    p.set_defaults(func=commands["diffs"])


def _add_drift(verbs: Verbs, commands: Mapping[str, Command]) -> None:
    text = (
        "Show ROUTE's drift: per feature the PSI against the reference, the alarm "
        "threshold and a bar (half full = at the threshold), JS distance, KS and the "
        "window's count; outputs per backend. --reset-reference starts a new reference "
        "from the next requests (needs the admin token)."
    )
    p = verbs.add_parser("drift", help=text, description=text)
    p.add_argument("route", metavar="ROUTE")
    p.add_argument("--reset-reference", action="store_true", help="collect a new reference")
    p.add_argument("--json", action="store_true", help="print the admin API's JSON as is")
    p.set_defaults(func=commands["drift"])
    text = (
        "Accuracy (or mean absolute error) of ROUTE from delayed labels, per arm (a "
        "backend as served; `B~mirror`, `B~assist`, `B~deferred`: answers nobody was "
        "served, scored too) with the 99 %% bounds the gates use: the last hour, the last 10 "
        "minutes, the "
        "series per minute, and each arm's accuracy test (concept drift). "
        "--reset-reference: each arm's next labels become its reference (admin token)."
    )
    p = verbs.add_parser("feedback", help=text, description=text)
    p.add_argument("route", metavar="ROUTE")
    p.add_argument("--reset-reference", action="store_true", help="start new references")
    p.add_argument("--json", action="store_true", help="print the admin API's JSON as is")
    p.set_defaults(func=commands["feedback"])


def _add_automation(verbs: Verbs, commands: Mapping[str, Command]) -> None:
    text = (
        "Move an automation route along the ladder human, shadow, assist, partial, full "
        "(on every replica at once; needs the admin token). Down is instant; up is one "
        "level at a time and only with the evidence its bar asks (agreement with the "
        "human, accuracy from labels, deferral rate), or with --force --reason, which "
        "history keeps. `status ROUTE` shows the next step and what it waits for."
    )
    p = verbs.add_parser("automation", help=text, description=text)
    p.add_argument("route", metavar="ROUTE")
    p.add_argument("level", choices=("human", "shadow", "assist", "partial", "full"))
    p.add_argument("--force", action="store_true", help="step up without the evidence")
    p.add_argument("--reason", default="", help="why (required with --force; kept in history)")
    p.set_defaults(func=commands["automation"])


def _add_action(verbs: Verbs, commands: Mapping[str, Command], verb: ActionVerb) -> None:
    text = verb.help + " Needs the admin token; exits 1 if the router refuses."
    p = verbs.add_parser(verb.name, help=text, description=text)
    p.add_argument("route", metavar="ROUTE")
    if verb.flag:
        p.add_argument(f"--{verb.flag}", action="store_true", help=verb.flag_help)
    p.set_defaults(func=commands["action"], verb=verb)
