"""A real `redis-server` on a free 127.0.0.1 port, for tests.

`running_redis()` is a plain context manager (usable from scripts and benchmarks); the
`redis_server` fixture wraps it for pytest. Persistence is off unless a test asks for it:
`running_redis(persistent=True)` writes an append-only file with `appendfsync always`, so
`server.restart()` proves that acknowledged writes survive a stop.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

LOOPBACK = "127.0.0.1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RedisServer:
    """One redis-server process. `restart()` keeps the port and the data directory."""

    port: int
    data_dir: Path
    persistent: bool
    binary: str
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def _args(self) -> list[str]:
        args = [
            self.binary,
            "--bind", LOOPBACK,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        return args

    def start(self, timeout_s: float = 10.0) -> None:
        self._proc = subprocess.Popen(
            self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=0.5)
        try:
            while True:
                if self._proc.poll() is not None:
                    log = self.data_dir / "redis.log"
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    raise RuntimeError(f"redis-server exited with {self._proc.returncode}:\n{tail}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not answer on port {self.port}")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGCONT)  # a frozen server must be able to act on SIGTERM
        proc.terminate()  # SIGTERM: redis flushes the append-only file and exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP the server: connections stay open and nothing answers (a hung Redis)."""
        assert self._proc is not None and self._proc.poll() is None
        os.kill(self._proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT a frozen server."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGCONT)


@contextlib.contextmanager
def running_redis(*, persistent: bool = False) -> Iterator[RedisServer]:
    """Start redis-server on a free loopback port; stop it and delete its data on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed: run `apt-get install -y redis-server` (CI's .ci/run"
            " does this)"
        )
    with tempfile.TemporaryDirectory(prefix="celgate-redis-") as tmp:
        server = RedisServer(_free_port(), Path(tmp), persistent, binary)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh, empty redis-server for one test (persistence off)."""
    with running_redis() as server:
        yield server
