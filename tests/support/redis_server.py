"""A real redis-server for tests: free loopback port, private data dir.

`RedisServer.start()` spawns `redis-server` and returns once PING answers;
`stop()` shuts it down (SIGTERM, so an appendonly server syncs its file first)
and `start()` again brings it back on the same port with the same data dir,
which is how fault tests simulate an outage and a recovery. With
`durable=True` every write is fsynced to the append-only file, so data
written before a stop is there after the restart.

Plain sockets speak to the server (PING, FLUSHALL): the fixture must not depend
on the code under test.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_path() -> str | None:
    return shutil.which("redis-server")


class RedisServer:
    def __init__(self, workdir: Path, *, durable: bool = False) -> None:
        self.workdir = workdir
        self.durable = durable
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _argv(self) -> list[str]:
        binary = redis_server_path() or "redis-server"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.workdir), "--save", "", "--daemonize", "no"]
        argv += ["--logfile", str(self.workdir / "redis.log")]
        if self.durable:
            return [*argv, "--appendonly", "yes", "--appendfsync", "always"]
        return [*argv, "--appendonly", "no"]

    def start(self) -> None:
        if self.proc is not None:
            return
        self.proc = subprocess.Popen(self._argv(), stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not start: {self._log_tail()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Shut down cleanly (clients see their connections closed)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait()

    def pause(self, paused: bool = True) -> None:
        """Freeze (SIGSTOP) or thaw (SIGCONT) the server: connections stay open, nothing answers."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def flush(self) -> None:
        reply = self._command(b"FLUSHALL\r\n")
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"FLUSHALL failed: {reply!r}")

    def _answers(self) -> bool:
        try:
            return self._command(b"PING\r\n").startswith(b"+PONG")
        except OSError:
            return False

    def _command(self, inline: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
            sock.sendall(inline)
            return sock.recv(64)

    def _log_tail(self) -> str:
        log = self.workdir / "redis.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"


class SentinelServer(RedisServer):
    """A redis sentinel watching one master as service `name`."""

    def __init__(self, workdir: Path, master_port: int, name: str = "mymaster") -> None:
        super().__init__(workdir)
        self.master_port = master_port
        self.name = name

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.name}/0"

    def _argv(self) -> list[str]:
        conf = self.workdir / "sentinel.conf"  # sentinel rewrites its config: a file of its own
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"logfile {self.workdir / 'redis.log'}\n"
            f"sentinel monitor {self.name} 127.0.0.1 {self.master_port} 1\n"
        )
        return [redis_server_path() or "redis-server", str(conf), "--sentinel"]
