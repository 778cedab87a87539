"""`make demo`: two example model servers and the router, ready to try by hand.

Starts model v1 on :8101 and v2 on :8102 (examples.model_server), the Open
Inference Protocol (V2) stand-ins iris v1 on :8103 and v2 on :8104
(examples.v2_server), an OpenAI-compatible LLM stand-in serving llama-3-8b and
qwen-7b on :8105 (examples.openai_server, tokens 100 ms apart), then
`python -m router --config config.yaml`, waits until the router's admin
/healthz and its data port answer, prints commands to try, and waits. Every
child runs in its own session, so Ctrl-C reaches only this launcher, which
then stops them in order: router first (it drains), then the models; each
gets SIGTERM, a few seconds, then SIGKILL. If a child dies on its own, the
demo stops the others and exits 1.

Ports are checked before anything starts: a port in use (an earlier demo
still running?) is reported and the demo exits 1. Logs go to run/demo/ unless
`--verbose`.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

MODELS = (("v1", 8101), ("v2", 8102))
V2_MODELS = (("v1", 8103), ("v2", 8104))  # the V2 route's (examples/v2_server.py)
LLM_PORT = 8105  # the chat route's (examples/openai_server.py)
LOG_DIR = Path("run/demo")
DEMO_TOKEN = "demo-token"  # used only when ROUTER_ADMIN_TOKEN is not set
TRAFFIC_RATE = 40.0  # requests a second, so the canary has something to judge


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=grace)


class DemoError(RuntimeError):
    """Something the user must fix; the message says what."""


def router_ports(config_path: str) -> tuple[str, int, str, int]:
    """(listen host, port, admin host, port) from the router's own config loader."""
    from router.config.reader import load_file  # the router validates its config its own way
    from router.core.confkit import ConfigError

    try:
        config = load_file(config_path)
    except (ConfigError, OSError) as exc:
        raise DemoError(f"cannot use {config_path}: {exc}") from None
    return config.listen.host, config.listen.port, config.admin.host, config.admin.port


def check_free(host: str, port: int, what: str) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise DemoError(
                f"port {port} ({what}) is already in use: is another demo or router running? "
                f"(`ss -ltnp 'sport = :{port}'` shows who)"
            ) from None


def http_ok(url: str, data: bytes | None = None) -> bool:
    headers = {"Content-Type": "application/json"} if data else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=1) as r:
            return bool(r.status < 500)
    except urllib.error.HTTPError as exc:  # an answer all the same (e.g. 400 for a bad body)
        return exc.code < 500
    except (urllib.error.URLError, OSError):
        return False


def spawn(name: str, cmd: list[str], verbose: bool) -> Child:
    out: IO[bytes] | None = None
    if not verbose:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        out = (LOG_DIR / f"{name}.log").open("ab")
    try:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT if out else None, start_new_session=True
        )
    finally:
        if out is not None:
            out.close()  # the child holds its own copy of the descriptor
    return Child(name, proc)


def wait_until(children: list[Child], what: str, probe: list[tuple[str, bytes | None]]) -> None:
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        dead = [c for c in children if c.proc.poll() is not None]
        if dead:
            raise DemoError(f"{dead[0].name} exited with {dead[0].proc.returncode}{_log_hint()}")
        if all(http_ok(url, data) for url, data in probe):
            return
        time.sleep(0.1)
    raise DemoError(f"{what} did not answer within 20 s{_log_hint()}")


def _log_hint() -> str:
    return f" (see {LOG_DIR}/*.log)" if LOG_DIR.exists() else ""


def start_all(config: str, verbose: bool) -> list[Child]:
    children: list[Child] = []
    try:
        for version, port in MODELS:
            cmd = [sys.executable, "-m", "examples.model_server", "--version", version]
            children.append(spawn(f"model-{version}", [*cmd, "--port", str(port)], verbose))
        for version, port in V2_MODELS:
            cmd = [sys.executable, "-m", "examples.v2_server", "--version", version]
            children.append(spawn(f"iris-{version}", [*cmd, "--port", str(port)], verbose))
        cmd = [sys.executable, "-m", "examples.openai_server", "--port", str(LLM_PORT)]
        children.append(
            spawn("llm", [*cmd, "--model", "llama-3-8b", "--model", "qwen-7b"], verbose)
        )
        health: list[tuple[str, bytes | None]] = [
            (f"http://127.0.0.1:{LLM_PORT}/health", None),
            *((f"http://127.0.0.1:{port}/health", None) for _, port in MODELS),
            *((f"http://127.0.0.1:{port}/v2/health/ready", None) for _, port in V2_MODELS),
        ]
        wait_until(children, "the model servers", health)
        _, port, _, admin = router_ports(config)
        cmd = [sys.executable, "-m", "router", "--config", config]
        os.environ.setdefault("ROUTER_ADMIN_TOKEN", DEMO_TOKEN)  # the router and routerctl
        children.append(spawn("router", cmd, verbose))
        probe = [(f"http://127.0.0.1:{admin}/healthz", None), (_predict_url(port), b"{}")]
        wait_until(children, "the router", probe)
    except BaseException:
        stop_all(children)
        raise
    return children


class Traffic(threading.Thread):
    """A few sticky users sending predictions, so the demo's rollouts have data."""

    def __init__(self, port: int, rate: float = TRAFFIC_RATE) -> None:
        super().__init__(name="demo-traffic", daemon=True)
        self.port = port
        self.rate = rate
        self.done = threading.Event()

    def run(self) -> None:
        rng = random.Random(7)
        while not self.done.wait(1 / self.rate):
            features = [round(rng.gauss(0, 1), 3) for _ in range(4)]
            user = f"user-{rng.randrange(2000)}"
            if rng.random() < 0.8:
                self._post(_predict_url(self.port), {"features": features}, user)
            else:  # a V2 batch of 1 to 8 rows
                rows = [
                    [round(rng.gauss(0, 1), 3) for _ in range(4)] for _ in range(rng.randint(1, 8))
                ]
                tensor = {
                    "name": "input-0",
                    "shape": [len(rows), 4],
                    "datatype": "FP64",
                    "data": rows,
                }
                url = f"http://127.0.0.1:{self.port}/v2/models/iris/infer"
                self._post(url, {"inputs": [tensor]}, user)

    def _post(self, url: str, body: object, user: str) -> None:
        headers = {"Content-Type": "application/json", "X-User-Id": user}
        req = urllib.request.Request(url, json.dumps(body).encode(), headers)
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                r.read()
        except (urllib.error.URLError, OSError):
            pass  # an error is part of what the router measures; the demo goes on


def _predict_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/predict"


def stop_all(children: list[Child]) -> None:
    for child in reversed(children):  # router first: it drains toward the models
        child.stop()


def print_hints(config: str, port: int, admin: int) -> None:
    body = '{"features":[0.1,0.2,0.3,0.4]}'
    chat_body = '{"model":"llama-3-8b","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    v2_body = (
        '{"inputs":[{"name":"input-0","shape":[2,4],"datatype":"FP64",'
        '"data":[0.1,0.2,0.3,0.4,1,2,3,4]}]}'
    )
    print(
        f"""
deploy-router demo is up: router :{port} (admin :{admin}), model v1 :8101, model v2 :8102,
V2 iris v1 :8103, V2 iris v2 :8104, LLM (llama-3-8b, qwen-7b) :{LLM_PORT}
config: {config} (edit it while this runs: valid changes apply, bad ones are refused)

try:
  curl -s -X POST localhost:{port}/predict -H 'Content-Type: application/json' \\
       -d '{body}' -i
  curl -s -X POST localhost:{port}/predict -H 'X-User-Id: alice' \\
       -H 'Content-Type: application/json' -d '{body}'   # same user, same model
  export ROUTER_ADMIN_TOKEN={os.environ.get("ROUTER_ADMIN_TOKEN", DEMO_TOKEN)}
  .venv/bin/routerctl status predict --watch  # the canary ramping, live
  .venv/bin/routerctl history predict         # what the controller did, and why
  .venv/bin/routerctl rollback predict        # everyone back on model-v1, now
  curl -s -X POST localhost:{port}/v2/models/iris/infer -H 'Content-Type: application/json' \\
       -d '{v2_body}'   # a V2 batch of two rows
  .venv/bin/routerctl status infer            # shadow (V2): how often v2 agrees, row by row
  .venv/bin/routerctl drift infer             # drift of every row's features
  curl -sN localhost:{port}/v1/chat/completions -d '{chat_body}'   # tokens 100 ms apart
  .venv/bin/routerctl status chat             # LLM shadow: text kinds, TTFT, inter-token
  curl -s localhost:{admin}/metrics | head
a little traffic ({TRAFFIC_RATE:g} req/s) runs so the rollouts have data (--no-traffic: none)
logs: {LOG_DIR}/ (router.log, model-v1.log, model-v2.log, iris-v1.log, iris-v2.log, llm.log)
Ctrl-C stops everything.
""",
        flush=True,
    )


def watch(children: list[Child]) -> int:
    """Block until Ctrl-C / SIGTERM (exit 0) or until a child dies (exit 1)."""
    while True:
        for child in children:
            if child.proc.poll() is not None:
                print(f"demo: {child.name} exited with {child.proc.returncode}{_log_hint()}")
                return 1
        time.sleep(0.5)


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="demo", description="Run the deploy-router demo.")
    p.add_argument("--config", default="config.yaml", help="router config (default config.yaml)")
    p.add_argument("--verbose", action="store_true", help="children log to this terminal")
    p.add_argument("--no-traffic", action="store_true", help="send no background requests")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    # Started in the background by a script, SIGINT arrives ignored; Ctrl-C must still work.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    children: list[Child] = []
    try:
        host, port, admin_host, admin = router_ports(args.config)
        for what, h, prt in [
            ("router", host, port),
            ("admin", admin_host, admin),
            ("model v1", "127.0.0.1", 8101),
            ("model v2", "127.0.0.1", 8102),
            ("V2 iris v1", "127.0.0.1", 8103),
            ("V2 iris v2", "127.0.0.1", 8104),
            ("LLM", "127.0.0.1", LLM_PORT),
        ]:
            check_free(h, prt, what)
        children = start_all(args.config, args.verbose)
        print_hints(args.config, port, admin)
        traffic = Traffic(port)
        if not args.no_traffic:
            traffic.start()
        try:
            return watch(children)
        finally:
            traffic.done.set()
    except DemoError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: stopping ...", flush=True)
        return 0
    finally:
        stop_all(children)


if __name__ == "__main__":
    sys.exit(main())
