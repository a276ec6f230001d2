"""`server.workers: 2`: two `celgate serve` workers on one port under a supervisor, as an
operator runs it. Budgets, rate limits and policy reloads hold across the workers; SIGTERM
and SIGHUP reach every worker. Each test spreads its calls over many gRPC connections and
checks, from /proc, that both workers held some of them, so a pass cannot come from one
worker serving everything."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.config import ConfigError, parse_config
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.fakes._server import Reply
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import ROOT, TEST_POLICY, GatewayProcess, config_data, openai_model
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

PER_REQUEST_USD = 0.01
COVERED = 50
CONNECTIONS = 16


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    upstream = FakeOpenAI()
    with upstream:
        upstream.set_latency(first_byte=0.02)
        upstream.enqueue(*[Reply(content="ok", completion_tokens=1000)] * 400)
        yield upstream


def workers_of(supervisor: int) -> list[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return [int(pid) for pid in children]


def connections_per_worker(pids: list[int], port: int, state: str = "01") -> dict[int, int]:
    """TCP sockets on local `port` in `state` (01 established, 0A listening) held by each
    worker (from /proc)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rpartition(":")[2], 16) == port and fields[3] == state:
                inodes.add(fields[9])
    counts: dict[int, int] = {}
    for pid in pids:
        count = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                count += 1
        counts[pid] = count
    return counts


class Stubs:
    """`CONNECTIONS` channels, each its own TCP connection (so the kernel spreads them)."""

    def __init__(self, address: str) -> None:
        options = [("grpc.use_local_subchannel_pool", 1)]
        self.channels = [
            grpc.aio.insecure_channel(address, options=options) for _ in range(CONNECTIONS)
        ]
        self.stubs = [gateway_pb2_grpc.GatewayServiceStub(c) for c in self.channels]

    async def __aenter__(self) -> list[gateway_pb2_grpc.GatewayServiceStub]:
        for channel in self.channels:
            await asyncio.wait_for(channel.channel_ready(), 10)
        return self.stubs

    async def __aexit__(self, *exc: object) -> None:
        for channel in self.channels:
            await channel.close()


def assert_both_workers_used(gateway: GatewayProcess) -> None:
    assert gateway.proc is not None
    pids = workers_of(gateway.proc.pid)
    assert len(pids) == 2
    counts = connections_per_worker(pids, gateway.port)
    assert sum(counts.values()) == CONNECTIONS, counts
    assert all(counts.values()), f"one worker held every connection: {counts}"


@contextmanager
def started(data: dict[str, Any], tmp: Path) -> Iterator[GatewayProcess]:
    """A gateway process with room to start two workers on a loaded machine."""
    gateway = GatewayProcess(data, tmp)
    try:
        gateway.start(timeout=90)
        assert gateway.proc is not None
        # SERVING answers as soon as one worker listens: wait for the other one too.
        deadline = time.monotonic() + 90
        while True:
            pids = workers_of(gateway.proc.pid)
            listening = connections_per_worker(pids, gateway.port, state="0A")
            if len(pids) == 2 and all(listening.values()):
                break
            assert time.monotonic() < deadline, f"not every worker listens: {listening}"
            time.sleep(0.1)
        yield gateway
    finally:
        if gateway.proc is not None and gateway.proc.poll() is None:
            gateway.terminate()  # a graceful stop, forwarded to the workers
            with suppress(subprocess.TimeoutExpired):
                gateway.proc.wait(30)
        gateway.__exit__()


def chat() -> pb.ChatRequest:
    return pb.ChatRequest(
        messages=[pb.Message(role=pb.ROLE_USER, content="hi")],
        preferred_model="cloud",
        max_tokens=1000,
    )


def two_workers(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "server": {**data["server"], "workers": 2}}


def test_budget_is_exact_across_two_workers(fake: FakeOpenAI, tmp_path: Path) -> None:
    model = openai_model(fake.url, price={"input_per_mtok": 0.0, "output_per_mtok": 10.0})
    data = config_data(
        {"cloud": model},
        "cloud",
        budgets=[{"tenant": "*", "window": "day", "limit_usd": COVERED * PER_REQUEST_USD}],
        ledger={"backend": "sqlite", "path": str(tmp_path / "ledger.db")},
    )
    with started(two_workers(data), tmp_path) as gateway:

        async def burst() -> list[bool]:
            async with Stubs(gateway.address) as stubs:
                assert_both_workers_used(gateway)

                async def one(i: int) -> bool:
                    try:
                        await stubs[i % CONNECTIONS].Chat(chat(), timeout=30)
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
                        return False
                    return True

                return await asyncio.gather(*(one(i) for i in range(200)))

        results = asyncio.run(burst())
    assert (results.count(True), results.count(False)) == (COVERED, 200 - COVERED)
    assert fake.request_count == COVERED


def test_rate_limit_holds_across_two_workers(
    fake: FakeOpenAI, redis_server: RedisServer, tmp_path: Path
) -> None:
    data = config_data(
        {"cloud": openai_model(fake.url)},
        "cloud",
        tenants={"default": {"rate_limit": {"requests_per_minute": 10}}},
        ledger={
            "backend": "redis",
            "url": redis_server.url,
            "journal_path": str(tmp_path / "journal.db"),
        },
    )
    with started(two_workers(data), tmp_path) as gateway:

        async def calls() -> list[grpc.StatusCode]:
            async with Stubs(gateway.address) as stubs:
                assert_both_workers_used(gateway)
                codes = []
                for i in range(40):
                    try:
                        await stubs[i % CONNECTIONS].Chat(chat(), timeout=10)
                        codes.append(grpc.StatusCode.OK)
                    except grpc.aio.AioRpcError as exc:
                        codes.append(exc.code())
                return codes

        codes = asyncio.run(calls())
    assert codes.count(grpc.StatusCode.OK) == 10
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 30


def test_workers_with_an_in_memory_rate_limit_are_refused(tmp_path: Path) -> None:
    data = two_workers(
        config_data(
            {"cloud": openai_model("http://127.0.0.1:9/v1")},
            "cloud",
            tenants={"default": {"rate_limit": {"requests_per_minute": 10}}},
        )
    )
    data["server"]["listen"] = "127.0.0.1:50999"
    with pytest.raises(ConfigError, match=r"server\.workers.*ledger\.backend: redis"):
        parse_config(data, base_dir=ROOT / "config")
    data["server"]["listen"] = "127.0.0.1:0"
    data.pop("tenants")
    with pytest.raises(ConfigError, match=r"server\.workers.*fixed port"):
        parse_config(data, base_dir=ROOT / "config")


def _rule_rewritten(policy_dir: Path) -> None:
    policy = policy_dir / "policy.yaml"
    # The revision is the file's content hash: any edit is a new revision.
    policy.write_text(policy.read_text() + "\n# edited\n")


def test_a_policy_edit_reaches_every_worker(fake: FakeOpenAI, tmp_path: Path) -> None:
    policy_dir = tmp_path / "policy"
    shutil.copytree(TEST_POLICY, policy_dir)
    # The test policy routes to `local`.
    data = config_data({"local": openai_model(fake.url)}, "local")
    data["policy"] = {"dir": str(policy_dir), "watch": True}
    route = pb.RouteRequest(messages=[pb.Message(role=pb.ROLE_USER, content="hi")])
    with started(two_workers(data), tmp_path) as gateway:

        async def revisions() -> set[str]:
            async with Stubs(gateway.address) as stubs:
                assert_both_workers_used(gateway)
                answers = [await stub.Route(route, timeout=10) for stub in stubs]
                return {a.route.policy_revision for a in answers}

        before = asyncio.run(revisions())
        assert len(before) == 1
        _rule_rewritten(policy_dir)
        deadline = time.monotonic() + 20
        while True:
            after = asyncio.run(revisions())
            if len(after) == 1 and after != before:
                break
            assert time.monotonic() < deadline, f"workers still serve {after}, was {before}"
            time.sleep(0.2)


def test_sighup_and_sigterm_reach_every_worker(fake: FakeOpenAI, tmp_path: Path) -> None:
    data = config_data({"cloud": openai_model(fake.url)}, "cloud")
    with started(two_workers(data), tmp_path) as gateway:
        assert gateway.proc is not None
        pids = workers_of(gateway.proc.pid)
        assert len(pids) == 2
        gateway.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while gateway.output().count("access settings reloaded") < 2:
            assert time.monotonic() < deadline, gateway.output()
            time.sleep(0.05)
        gateway.terminate()
        assert gateway.wait(30) == 0
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid)
        assert gateway.output().count("stopped") >= 2


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return "gone"


def test_a_dead_worker_stops_the_set(fake: FakeOpenAI, tmp_path: Path) -> None:
    data = config_data({"cloud": openai_model(fake.url)}, "cloud")
    with started(two_workers(data), tmp_path) as gateway:
        assert gateway.proc is not None
        first, second = workers_of(gateway.proc.pid)
        os.kill(first, signal.SIGKILL)
        # The orchestrator restarts the whole set rather than run it short of a worker.
        assert gateway.wait(30) == 1
        assert not Path(f"/proc/{second}").exists() or "Z" in _state(second)


def test_workers_stop_when_the_supervisor_is_killed(fake: FakeOpenAI, tmp_path: Path) -> None:
    data = config_data({"cloud": openai_model(fake.url)}, "cloud")
    with started(two_workers(data), tmp_path) as gateway:
        assert gateway.proc is not None
        pids = workers_of(gateway.proc.pid)
        gateway.proc.kill()
        gateway.proc.wait(10)
        deadline = time.monotonic() + 30
        while any(_state(pid) not in ("gone", "Z") for pid in pids):
            assert time.monotonic() < deadline, f"orphaned workers: {pids}"
            time.sleep(0.1)
