"""Helpers that start the real gateway for tests: in-process (`serve`) or as a child process
(`GatewayProcess`), configured against the upstream fakes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
import yaml
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from gateway.config import Config, parse_config
from gateway.server import Gateway, running
from gateway.v1 import gateway_pb2_grpc

M = TypeVar("M", bound=Message)
ROOT = Path(__file__).resolve().parent.parent
# Routes to the preferred model, else `local`; the labels may name fallbacks.
TEST_POLICY = ROOT / "tests" / "policies" / "preferred"


def status_detail(error: grpc.RpcError, kind: type[M]) -> M:
    """The `kind` detail (ErrorInfo, QuotaFailure, RetryInfo, ...) of a failed call's status."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "the error carries no google.rpc.Status"
    for packed in status.details:
        if packed.Is(kind.DESCRIPTOR):
            detail = kind()
            packed.Unpack(detail)
            return detail
    raise AssertionError(f"no {kind.DESCRIPTOR.name} detail")


def serve_once(data: dict[str, Any], tmp: Path) -> subprocess.CompletedProcess[str]:
    """`celgate serve` with a config that must stop it at start-up (times out otherwise)."""
    path = tmp / "celgate.yaml"
    path.write_text(yaml.safe_dump(data))
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ollama_model(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "ollama",
        "upstream_model": "llama3.1:8b",
        "base_url": url,
        "location": "on_prem",
        "clearance": "RESTRICTED",
        "timeout_s": 10,
        **extra,
    }


def openai_model(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "upstream_model": "gpt-5-mini",
        "base_url": url,
        "location": "cloud",
        "clearance": "INTERNAL",
        "timeout_s": 10,
        **extra,
    }


def config_data(models: dict[str, dict[str, Any]], default: str, **top: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0", "grace_period_s": 5},
        "models": models,
        "default_model": default,
        "policy": {"dir": str(TEST_POLICY), "watch": False},
        # A fresh ledger per gateway: tests must not share spend.
        "ledger": {"backend": "sqlite", "path": str(Path(tempfile.mkdtemp()) / "ledger.db")},
    }
    data.update(top)
    return data


def make_config(models: dict[str, dict[str, Any]], default: str, **top: Any) -> Config:
    return parse_config(config_data(models, default, **top), base_dir=ROOT / "config")


@asynccontextmanager
async def serve(
    config: Config,
) -> AsyncIterator[tuple[Gateway, gateway_pb2_grpc.GatewayServiceStub]]:
    """A started in-process gateway and a stub on a real gRPC channel to it."""
    async with running(config) as gateway, grpc.aio.insecure_channel(gateway.address) as channel:
        yield gateway, gateway_pb2_grpc.GatewayServiceStub(channel)


class GatewayProcess:
    """`celgate serve` in a child process, as an operator runs it."""

    def __init__(self, data: dict[str, Any], tmp: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        data = {**data, "server": {**data.get("server", {}), "listen": f"127.0.0.1:{self.port}"}}
        self.config_path = tmp / "celgate.yaml"
        self.config_path.write_text(yaml.safe_dump(data))
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = tmp / "gateway.log"
        self._env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    # Generous: only a failing start-up waits it out, and a full suite on a shared 2-core
    # machine has seen a healthy child take more than 20 s to import and bind.
    def start(self, timeout: float = 60.0) -> GatewayProcess:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env,
            cwd=ROOT,
        )
        try:
            self.wait_serving(timeout)
        except BaseException:
            # `with` never reaches __exit__ when start-up fails: do not leave the child running.
            self.__exit__()
            raise
        return self

    def health(self) -> int:
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            return int(response.status)

    def wait_serving(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}: {self.output()}")
            try:
                if self.health() == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"gateway did not become SERVING: {self.output()}")

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
