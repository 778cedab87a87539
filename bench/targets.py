"""Start and stop what the benchmark talks to: a backend, nginx, the router.

Every target is a real process on a free loopback port, started from a config
file written into the run's work directory (logs go there too, so a failed
start can show why). `Target.pid` is the process whose tree we measure: the
nginx master (its one worker is a child) or the router.

The backend is nginx answering a fixed JSON body with `return 200` when nginx
is installed (it costs a few µs a request, so the proxies are what we see);
otherwise examples/fast_backend.py, a uvloop + httptools fixed answer.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from examples.fast_backend import BODY

PATH = "/predict"
PROBE_BODY = b'{"features":[0.1,-0.2,0.3,0.4,0.5,-0.6,0.7,0.8]}'
_NGINX_HEAD = """daemon off;
worker_processes {workers};
pid {dir}/{name}.pid;
error_log {dir}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {dir}/{name}-body;
  proxy_temp_path {dir}/{name}-proxy;
  fastcgi_temp_path {dir}/{name}-fastcgi;
  uwsgi_temp_path {dir}/{name}-uwsgi;
  scgi_temp_path {dir}/{name}-scgi;
"""
_NGINX_BACKEND = """  server {{
    listen 127.0.0.1:{port} backlog=1024;
    location / {{ default_type application/json; return 200 '{body}'; }}
  }}
}}
"""
# The reference of BENCH.md and issue #2: nginx deciding a split per request, as the
# router does. The router's bench route is an unsticky split (a random key per
# request), so nginx splits on the per-request random $request_id; 100 % of it goes to
# the one upstream, like the router's `weights: {b: 100}`.
_NGINX_SPLIT = """  split_clients "$request_id" $pool {{ 100% backend; }}
"""
_NGINX_PROXY = """  upstream backend {{
    server 127.0.0.1:{backend_port};
    keepalive 128;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=1024;
    {access_log}
    location / {{
      proxy_pass http://{upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
_ROUTER_YAML = """listen: 127.0.0.1:{port}
admin: {{listen: 127.0.0.1:{admin_port}}}
logging: {{access_sample: 0}}
backends: {{b: {{url: http://127.0.0.1:{backend_port}}}}}
routes: [{{name: all, match: {{path_prefix: /}}, strategy: {{split: {{weights: {{b: 100}}}}}}}}]
"""
# What a user runs: no logging section, so the access log is on, on stderr (which
# _spawn sends to a file in the run's directory, as `2>>router.log` or a container
# runtime would).
DEFAULT_YAML = _ROUTER_YAML.replace("logging: {{access_sample: 0}}\n", "")


class StartError(RuntimeError):
    """A target did not come up; the message carries the tail of its log."""


@dataclass
class Target:
    name: str
    port: int
    proc: subprocess.Popen[bytes] | None
    log: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise StartError(f"{self.name} has no process of its own")
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL: a clean stop when possible, a stop always."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _probe(port: int) -> int:
    """One POST; returns the status, raises OSError while nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        headers = {"Content-Type": "application/json"}
        conn.request("POST", PATH, body=PROBE_BODY, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def _tail(log: Path | None) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-20:])


def wait_ready(target: Target, timeout: float = 15.0) -> None:
    """Wait until a POST to the target answers 200; fail fast if the process died."""
    deadline, last = time.monotonic() + timeout, "no answer"
    while time.monotonic() < deadline:
        if target.proc is not None and target.proc.poll() is not None:
            raise StartError(
                f"{target.name} exited with {target.proc.returncode}:\n{_tail(target.log)}"
            )
        try:
            status = _probe(target.port)
            if status == 200:
                return
            last = f"status {status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.05)
    target.stop()
    raise StartError(f"{target.name} not ready after {timeout}s ({last}):\n{_tail(target.log)}")


def _spawn(
    name: str, port: int, cmd: list[str], workdir: Path, env: dict[str, str] | None = None
) -> Target:
    log = workdir / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    target = Target(name, port, proc, log)
    try:
        wait_ready(target)
    except BaseException:
        target.stop()
        raise
    return target


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def _nginx(name: str, conf_body: str, port: int, workdir: Path, workers: int = 1) -> Target:
    conf = workdir / f"{name}.conf"
    conf.write_text(_NGINX_HEAD.format(dir=workdir, name=name, workers=workers) + conf_body)
    err = workdir / f"{name}.error.log"
    cmd = ["nginx", "-p", str(workdir), "-e", str(err), "-c", str(conf)]
    return _spawn(name, port, cmd, workdir)


def start_nginx_backend(workdir: Path) -> Target:
    port = free_port()
    body = BODY.decode().replace("'", "\\'")
    return _nginx("backend", _NGINX_BACKEND.format(port=port, body=body), port, workdir)


def start_fast_backend(workdir: Path) -> Target:
    port = free_port()
    cmd = [sys.executable, "-m", "examples.fast_backend", "--port", str(port)]
    return _spawn("backend", port, cmd, workdir)


def start_backend(workdir: Path, kind: str = "auto") -> Target:
    """kind: "nginx", "python", or "auto" (nginx when installed)."""
    if kind == "nginx" or (kind == "auto" and have("nginx")):
        target = start_nginx_backend(workdir)
        target.extra["kind"] = "nginx return 200"
    else:
        target = start_fast_backend(workdir)
        target.extra["kind"] = "examples.fast_backend (uvloop + httptools)"
    return target


def start_nginx_proxy(
    workdir: Path,
    backend_port: int,
    *,
    split: bool = True,
    access_log: bool = False,
    workers: int = 1,
    name: str = "",
) -> Target:
    """nginx as a reverse proxy: with `split_clients` (the reference), or plain.

    `access_log`: nginx's default, one `combined` line per request written to a file
    as each request ends (no `buffer=`), as a stock nginx.conf has it."""
    port = free_port()
    upstream = "$pool" if split else "backend"
    name = name or ("nginx" if split else "nginx-plain")
    log = f"access_log {workdir}/{name}.access.log;" if access_log else ""
    body = _NGINX_PROXY.format(
        port=port, backend_port=backend_port, upstream=upstream, access_log=log
    )
    return _nginx(name, (_NGINX_SPLIT.format() if split else "") + body, port, workdir, workers)


def router_yaml(port: int, admin_port: int, backend_port: int) -> str:
    """The config the brief fixes: one split route, 100 % to the backend, no access log."""
    return _ROUTER_YAML.format(port=port, admin_port=admin_port, backend_port=backend_port)


def start_router(
    workdir: Path,
    backend_port: int,
    *,
    name: str = "router",
    config: str | None = None,
    args: tuple[str, ...] = (),
) -> Target:
    """`python -m router` on a generated config (or `config`, YAML text with {port} etc.)."""
    port, admin_port = free_port(), free_port()
    text = (config or _ROUTER_YAML).format(
        port=port, admin_port=admin_port, backend_port=backend_port
    )
    if "shutdown:" not in text:  # nothing balances load in front of it: stop at once
        text += "shutdown: {delay: 0s}\n"
    path = workdir / f"{name}.yaml"
    path.write_text(text)
    # The admin API wants a token for changes; the bench makes none but must not fail on it.
    env = {"ROUTER_ADMIN_TOKEN": "bench-token", **os.environ}
    cmd = [sys.executable, "-m", "router", "--config", str(path), *args]
    target = _spawn(name, port, cmd, workdir, env)
    target.extra["admin_port"] = str(admin_port)
    return target
