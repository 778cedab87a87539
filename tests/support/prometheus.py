"""A real Prometheus (and promtool) for tests: Debian's `prometheus` package.

`Prometheus(tmp, targets, rule_files).start()` writes a config scraping the
targets every second (job `deploy-router`), evaluating the rule files every
second, with its data in the test's tmp dir and its HTTP API on a free
loopback port; `query(expr)` evaluates PromQL now. The binaries are found as
the Makefile finds promtool: $PROMETHEUS / $PROMTOOL, then PATH, then
/usr/bin (`.ci/run` installs the package like redis-server). Plain urllib
speaks to it: the fixture must not depend on the code under test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support.routerproc import free_port

START_TIMEOUT = 20.0
NOT_INSTALLED = "{} is not installed (apt-get install prometheus); skipped"


def binary(name: str) -> str | None:
    """$NAME (upper case), else `name` on PATH, else /usr/bin/name; None when none is."""
    given = os.environ.get(name.upper())
    if given:
        return given
    found = shutil.which(name)
    if found:
        return found
    fallback = Path("/usr/bin") / name
    return str(fallback) if fallback.exists() else None


class Prometheus:
    def __init__(
        self,
        tmp: Path,
        targets: list[str],
        rule_files: list[Path],
        interval: str = "1s",
    ) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.config_path = tmp / "prometheus.yml"
        self.log_path = tmp / "prometheus.log"
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": "deploy-router", "static_configs": [{"targets": targets}]}
            ],
        }
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        exe = binary("prometheus")
        assert exe is not None, NOT_INSTALLED.format("prometheus")
        argv = [exe, f"--config.file={self.config_path}"]
        argv += [f"--storage.tsdb.path={self.tmp / 'data'}", "--log.level=warn"]
        argv += [f"--web.listen-address=127.0.0.1:{self.port}"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus did not start:\n{self.log_path.read_text()}")

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or the scalar, as one sample) of `expr` now."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
