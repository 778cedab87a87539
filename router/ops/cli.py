"""routerctl: the operator's command line, a thin client of the admin API.

    routerctl [--admin URL] [--token T] VERB ...
    env: ROUTERCTL_ADMIN (default http://127.0.0.1:9901), ROUTER_ADMIN_TOKEN

Theory of operation
-------------------
Every verb is one HTTP call to the admin API (router/ops/admin.py) with the
standard library's urllib and a 5 s timeout, so routerctl starts fast and needs
nothing beyond Python. The verbs, their arguments and help are in
router/ops/cli_args.py; route actions are data there: `ACTIONS` lists each
verb, its help and its flags; a new verb that the admin API knows is one more
entry.

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
from typing import Any

from router.ops import cli_export
from router.ops.cli_args import ActionVerb, Command, build_parser
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

TIMEOUT = 5.0
OK, FAILED, USAGE = 0, 1, 2


class Unreachable(Exception):
    """The admin API did not answer (connection refused, timeout, bad URL)."""


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


COMMANDS: dict[str, Command] = {
    "status": cmd_status,
    "validate": cmd_validate,
    "history": cmd_history,
    "diffs": cmd_diffs,
    "drift": cmd_drift,
    "feedback": cmd_feedback,
    "automation": cmd_automation,
    "action": cmd_action,
    "export": lambda api, args: cli_export.run(api.base, api.token, args),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(COMMANDS).parse_args(argv)  # exits 2 on usage errors
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
