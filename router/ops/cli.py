"""routerctl: the operator's command line, a thin client of the admin API.

    routerctl [--admin URL] [--token T] VERB ...
    env: ROUTERCTL_ADMIN (default http://127.0.0.1:9901), ROUTER_ADMIN_TOKEN

Theory of operation
-------------------
Every verb is one HTTP call to the admin API (router/ops/admin.py) with the
standard library's urllib and a 5 s timeout, so routerctl starts fast and needs
nothing beyond Python. Route actions are data: `ACTIONS` lists each verb, its
help and its flags; a new verb that the admin API knows is one more entry.

Exit codes are for scripts: 0 all is well; 1 the router refused or failed the
command, or a shown rollout is aborted; 2 usage errors and an unreachable admin
API.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from router.ops.cli_rollout import rollout_lines
from router.ops.cli_views import (
    aborted,
    automation_lines,
    diff_lines,
    drift_lines,
    feedback_lines,
    history_line,
    route_lines,
    shadow_lines,
    status_lines,
    stream_lines,
)

DEFAULT_ADMIN = "http://127.0.0.1:9901"
TIMEOUT = 5.0
OK, FAILED, USAGE = 0, 1, 2


class Unreachable(Exception):
    """The admin API did not answer (connection refused, timeout, bad URL)."""


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


class Api:
    """The admin API at one base URL, with an optional bearer token."""

    def __init__(self, base: str, token: str | None) -> None:
        self.base = base.rstrip("/")
        self.token = token

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """(status, JSON answer); 4xx/5xx answers are returned, not raised."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                return resp.status, _parse(resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, _parse(err.read())
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise Unreachable(f"cannot reach the admin API at {self.base}: {reason}") from err


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        return {"message": raw.decode("utf-8", "replace").strip()}
    return body if isinstance(body, dict) else {"result": body}


# -- verbs ----------------------------------------------------------------------


def cmd_status(api: Api, args: argparse.Namespace) -> int:
    if not args.watch:
        return _status_once(api, args)
    try:
        while True:
            print("\033[H\033[J", end="")  # clear the terminal, cursor home
            _status_once(api, args)
            print(f"\n(every {args.watch:g}s; Ctrl-C to stop)", flush=True)
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return OK


def _status_once(api: Api, args: argparse.Namespace) -> int:
    path = f"/v1/routes/{_q(args.route)}" if args.route else "/v1/status"
    code, body = api.call("GET", path)
    if code >= 400:
        return _fail(body)
    routes = [body] if args.route else body.get("routes", [])
    shadow = _shadow(api, args.route) if args.route else None
    streams = _streams(api, args.route) if args.route else None
    if args.json:
        extra = {"shadow": shadow} if shadow else {}
        extra |= {"streams": streams} if streams else {}
        print(json.dumps({**body, **extra}, indent=2, sort_keys=True))
    else:
        lines = route_lines(routes) if args.route else status_lines(body)
        if args.route:
            lines += _rollout_view(api, body)
        lines += ["", *stream_lines(streams)] if streams else []
        print("\n".join([*lines, *(["", *shadow_lines(shadow)] if shadow else [])]))
    return FAILED if aborted(routes) else OK


def _rollout_view(api: Api, entry: dict[str, Any]) -> list[str]:
    """The ramp, the gates and why (a canary), or the ladder's evidence (automation),
    from the controller's latest verdicts."""
    kind = (entry.get("rollout") or {}).get("kind")
    if kind not in ("canary", "automation"):
        return []
    code, status = api.call("GET", "/v1/status")
    analysis = (status.get("analysis") or {}).get(entry["name"]) if code < 400 else None
    if kind == "automation":
        return ["", *automation_lines(analysis)] if analysis else []
    return ["", *rollout_lines(entry, analysis)]


def _shadow(api: Api, route: str) -> dict[str, Any] | None:
    """The route's shadow figures when it mirrors anything, else None."""
    code, body = api.call("GET", f"/v1/routes/{_q(route)}/shadow")
    if code >= 400 or not (body.get("shadows") or body.get("offered")):
        return None
    return body


def _streams(api: Api, route: str) -> dict[str, Any] | None:
    """The route's stream timing per arm when it has streamed answers, else None."""
    code, body = api.call("GET", f"/v1/routes/{_q(route)}/streams")
    return body if code < 400 and body.get("arms") else None


def cmd_diffs(api: Api, args: argparse.Namespace) -> int:
    code, body = api.call("GET", f"/v1/routes/{_q(args.route)}/diffs?n={args.n}")
    if code >= 400:
        return _fail(body)
    records = body.get("diffs", [])
    if args.json:
        print(json.dumps(records, indent=2, sort_keys=True))
    elif not records:
        print(f"no disagreement sampled for {args.route}")
    else:
        print("\n".join(diff_lines(records)).rstrip())
    return OK


def cmd_validate(api: Api, args: argparse.Namespace) -> int:
    from router.config.validate import check_file  # lazy: the CLI stays light for other verbs

    errors, warnings = check_file(args.file)
    for error in errors:
        print(error)
    if errors:
        return FAILED
    print(f"OK: {args.file}")
    for warning in warnings:
        print(f"warning: {warning}")
    return OK


def cmd_history(api: Api, args: argparse.Namespace) -> int:
    code, body = api.call("GET", f"/v1/routes/{_q(args.route)}/history?n={args.n}")
    if code >= 400:
        return _fail(body)
    entries = body.get("entries", [])
    if args.json:
        print(json.dumps(entries, indent=2, sort_keys=True))
        return OK
    for e in entries:
        print(history_line(e))
        if isinstance(e.get("evidence"), dict):
            print(f"    figures then: {_figures_then(e['evidence'])}")
    return OK


def _figures_then(ev: dict[str, Any]) -> str:
    """The evidence a ladder move was made on, in one line."""
    parts = []
    for key, label in (("agreement", "agreement"), ("model_accuracy", "model accuracy")):
        if ev.get(key) is not None:
            parts.append(f"{label} {100 * ev[key]:.1f}%")
    if ev.get("human_accuracy") is not None:
        parts.append(f"human accuracy {100 * ev['human_accuracy']:.1f}%")
    if ev.get("deferral_rate") is not None:
        parts.append(f"deferral {100 * ev['deferral_rate']:.1f}%")
    parts.append(f"compared {ev.get('compared', 0)}, requests {ev.get('requests', 0)}")
    return "; ".join(parts)


def cmd_action(api: Api, args: argparse.Namespace) -> int:
    verb: ActionVerb = args.verb
    body: dict[str, Any] = {"actor": "routerctl", "user": os.environ.get("USER", "")}
    if verb.flag and getattr(args, verb.flag):
        body[verb.flag] = True
    code, answer = api.call("POST", f"/v1/routes/{_q(args.route)}/{verb.name}", body)
    if code >= 400:
        return _fail(answer)
    print(answer.get("message") or json.dumps(answer))
    return OK


def _actor() -> str:
    user = os.environ.get("USER", "")
    return f"routerctl ({user})" if user else "routerctl"


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _fail(body: dict[str, Any]) -> int:
    print(f"error: {body.get('message') or body.get('error') or body}", file=sys.stderr)
    return FAILED


# -- drift, feedback, automation ----------------------------------------------------
def cmd_drift(api: Api, args: argparse.Namespace) -> int:
    if args.reset_reference:
        code, body = api.call("POST", f"/v1/routes/{_q(args.route)}/drift/reset", {})
        if code >= 400:
            return _fail(body)
        print(body.get("message") or json.dumps(body))
        return OK
    code, body = api.call("GET", f"/v1/routes/{_q(args.route)}/drift")
    if code >= 400:
        return _fail(body)
    if args.json:
        print(json.dumps(body, indent=2, sort_keys=True))
    else:
        print("\n".join(drift_lines(body)))
    return OK


def cmd_feedback(api: Api, args: argparse.Namespace) -> int:
    if args.reset_reference:
        code, body = api.call("POST", f"/v1/routes/{_q(args.route)}/feedback/reset", {})
        if code >= 400:
            return _fail(body)
        print(body.get("message") or json.dumps(body))
        return OK
    code, body = api.call("GET", f"/v1/routes/{_q(args.route)}/feedback")
    if code >= 400:
        return _fail(body)
    if args.json:
        print(json.dumps(body, indent=2, sort_keys=True))
    else:
        print("\n".join(feedback_lines(body)))
    return OK


def cmd_automation(api: Api, args: argparse.Namespace) -> int:
    if args.force and not args.reason:
        print("error: --force needs --reason '...': history keeps why", file=sys.stderr)
        return USAGE
    body: dict[str, Any] = {"level": args.level, "actor": _actor()}
    if args.force:
        body.update(force=True, reason=args.reason)
    code, answer = api.call("POST", f"/v1/routes/{_q(args.route)}/automation", body)
    if code >= 400:
        return _fail(answer)
    print(answer.get("message") or json.dumps(answer))
    return OK


# -- argument parsing -------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
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
        help="bearer token for changes (env ROUTER_ADMIN_TOKEN)",
    )
    verbs = parser.add_subparsers(dest="command", required=True, metavar="VERB")
    _add_status(verbs)
    _add_validate(verbs)
    _add_history(verbs)
    _add_diffs(verbs)
    _add_drift(verbs)
    _add_automation(verbs)
    for verb in ACTIONS:
        _add_action(verbs, verb)
    return parser


def _add_status(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    p.set_defaults(func=cmd_status)


def _add_validate(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = (
        "Check a config file locally (no router needed): print 'OK: FILE', or each error "
        "with its exact path and exit 1. Warns (exit 0) when a route's compared or watched "
        "names do not fit its protocol, e.g. a V2 answer read by JSON path."
    )
    p = verbs.add_parser("validate", help=text, description=text)
    p.add_argument("file", metavar="FILE", help="path of the config.yaml to check")
    p.set_defaults(func=cmd_validate)


def _add_history(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "Show ROUTE's rollout history, oldest first: time, actor, event, reason."
    p = verbs.add_parser("history", help=text, description=text)
    p.add_argument("route", metavar="ROUTE")
    p.add_argument("-n", type=int, default=20, help="how many newest entries (default 20)")
    p.add_argument("--json", action="store_true", help="print the entries as JSON")
    p.set_defaults(func=cmd_history)


def _add_diffs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = (
        "Show ROUTE's sampled disagreements between the primary and its shadows, newest "
        "first: request id, status and latency of both, the differing fields, both answers."
    )
    p = verbs.add_parser("diffs", help=text, description=text)
    p.add_argument("route", metavar="ROUTE")
    p.add_argument("-n", type=int, default=20, help="how many newest samples (default 20)")
    p.add_argument("--json", action="store_true", help="print the samples as JSON")
    p.set_defaults(func=cmd_diffs)


def _add_drift(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    p.set_defaults(func=cmd_drift)
    text = (
        "Accuracy (or mean absolute error) of ROUTE from delayed labels, per arm (a "
        "backend as served; `B~mirror`, `B~assist`, `B~deferred`: answers nobody was "
        "served, scored too) with 95 %% intervals: the last hour, the last 10 minutes, the "
        "series per minute, and each arm's accuracy test (concept drift). "
        "--reset-reference: each arm's next labels become its reference (admin token)."
    )
    p = verbs.add_parser("feedback", help=text, description=text)
    p.add_argument("route", metavar="ROUTE")
    p.add_argument("--reset-reference", action="store_true", help="start new references")
    p.add_argument("--json", action="store_true", help="print the admin API's JSON as is")
    p.set_defaults(func=cmd_feedback)


def _add_automation(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    p.set_defaults(func=cmd_automation)


def _add_action(
    verbs: argparse._SubParsersAction[argparse.ArgumentParser], verb: ActionVerb
) -> None:
    text = verb.help + " Needs the admin token; exits 1 if the router refuses."
    p = verbs.add_parser(verb.name, help=text, description=text)
    p.add_argument("route", metavar="ROUTE")
    if verb.flag:
        p.add_argument(f"--{verb.flag}", action="store_true", help=verb.flag_help)
    p.set_defaults(func=cmd_action, verb=verb)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on usage errors
    api = Api(args.admin, args.token)
    try:
        code: int = args.func(api, args)
        sys.stdout.flush()
    except Unreachable as err:
        print(str(err), file=sys.stderr)
        return USAGE
    except BrokenPipeError:  # `routerctl ... | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return OK
    return code


if __name__ == "__main__":
    sys.exit(main())
