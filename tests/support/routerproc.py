"""Run the router as a real process for tests where processes matter.

`RouterProcess` writes a config file, starts `python -m router --config FILE`,
waits until both the admin API and the data port answer, and stops it with
SIGTERM (then SIGKILL) at the end. Output goes to a log file in the test's tmp
dir so a failure can show it. Unless a test says otherwise, `shutdown.delay` is
0 (a test is not behind a load balancer; tests/test_pod_lifecycle.py sets it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

START_TIMEOUT = 30.0
ADMIN_TOKEN = "test-token"  # the operator token every RouterProcess starts with
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}  # admin reads need a token too


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(
    port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Until something listens on the port; TimeoutError, at once if `proc` has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class RouterProcess:
    def __init__(self, tmp: Path, config: dict[str, Any], *, name: str = "router") -> None:
        self.tmp = tmp
        self.name = name
        self.port = free_port()
        self.admin_port = free_port()
        config = dict(config)
        config.setdefault("listen", f"127.0.0.1:{self.port}")
        config.setdefault("admin", {"listen": f"127.0.0.1:{self.admin_port}"})
        config.setdefault("shutdown", {"delay": "0s"})
        self.config = config
        self.config_path = tmp / f"{name}.yaml"
        self.log_path = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config(config)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def write_config(self, config: dict[str, Any]) -> None:
        """Replace the config file the way an editor that renames would."""
        staging = self.config_path.with_suffix(".tmp")
        staging.write_text(yaml.safe_dump(config, sort_keys=False))
        os.replace(staging, self.config_path)

    def start(self, *args: str, env: dict[str, str] | None = None) -> RouterProcess:
        full_env = {**os.environ, "ROUTER_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "router", "--config", str(self.config_path), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
            )
        try:  # generous: on a loaded 2-core machine a cold start (no .pyc) takes seconds
            wait_port(self.admin_port, START_TIMEOUT, self.proc)
            wait_port(self.port, START_TIMEOUT, self.proc)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"router did not start:\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get_json(self, path: str) -> Any:
        import json

        return json.loads(self.get_text(path))

    def get_text(self, path: str) -> str:
        """GET an admin API path (blocking: call it in a thread from async code)."""
        req = urllib.request.Request(self.admin_url + path, headers=ADMIN_AUTH)
        with urllib.request.urlopen(req, timeout=5) as resp:
            return str(resp.read().decode())

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code
