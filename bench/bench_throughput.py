"""What a request costs the gateway, in one run on one machine: CPU-seconds per request, req/s
and p50/p99 at 1, 16 and 64 concurrent callers for

- `floor`: a minimal grpc.aio unary server (what any Python gRPC server costs),
- `route`: celgate `Route` (the pipeline without an upstream call),
- `chat`:  celgate `Chat` to a cloud model of the bundled configuration and policy, decision
  log on, at a fake OpenAI upstream,
- `direct`: the same chat sent straight to the fake with the gateway's own upstream client
  (aiohttp, `gateway/providers/http.py`), for the added latency at one caller (chat p50 minus
  direct p50); `--only ...,sdk` adds `direct-sdk`, the same call through the openai SDK.

Every party runs in its own process: the fake upstream is a bare asyncio protocol answering
one fixed `chat.completion` body (microseconds per request). The load client is `h2load`
(nghttp2's HTTP/2 load generator, written in C; Debian `nghttp2-client`) when it is installed:
it posts the same length-prefixed protobuf request a gRPC stub sends (`content-type:
application/grpc`, `te: trailers`) on 8 connections, and `direct` with `--h1` on keep-alive
HTTP/1.1 connections, so all four targets are driven by one client that costs 0.02-0.05 ms of
CPU per request. A Python gRPC client costs 0.25-0.45 ms per call whichever way it is driven
(grpc.aio, the blocking stub from threads, `future()`): on a 2-core machine that is a third of
what is being measured, and it competes with the gateway for the cores. `--client grpc` uses
this process's grpc.aio instead (and `direct` the gateway's own aiohttp client), for machines
without h2load. h2load cannot read gRPC trailers, so every chat and route answer is checked in
the decision log instead: the run fails if a line is not `OK` or one is missing.

Each party's CPU comes from /proc/<pid>/stat (the client's from the reaped h2load processes'
rusage, or os.times for `--client grpc`); `srv cores` is the server's CPU-seconds per second
of the run (how many cores it got). The report shows that neither the fake nor the client is
the bottleneck. Targets run interleaved in short rounds, so they all see the same (noisy,
shared) machine.

    .venv/bin/python bench/bench_throughput.py [--requests 3000] [--rounds 6]
    # another source tree (for example `git archive <commit> | tar -x -C /tmp/before`) as
    # `route@before` and `chat@before`, interleaved with this tree's
    .venv/bin/python bench/bench_throughput.py --compare before=/tmp/before
    # several workers on one port: `chat/w2` beside `chat`
    .venv/bin/python bench/bench_throughput.py --workers 1,2 --only chat --concurrency 64
    # the Python client (no h2load on the machine)
    .venv/bin/python bench/bench_throughput.py --client grpc
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = "Give me one sentence about latency."
TICKS = os.sysconf("SC_CLK_TCK")
SERVICE = "gateway.v1.GatewayService"
BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-5-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Latency is the wait."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    }
).encode()


# --- the fake upstream: HTTP/1.1 keep-alive, one fixed answer --------------------------------


class _Upstream(asyncio.Protocol):
    RESPONSE = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(BODY)).encode()
        + b"\r\nconnection: keep-alive\r\n\r\n"
        + BODY
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            marker = head.find(b"content-length:")
            if marker >= 0:
                length = int(head[marker + 15 :].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(self.RESPONSE)


async def _serve_upstream(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Upstream, "127.0.0.1", port)
    await server.serve_forever()


# --- the floor: a minimal grpc.aio unary server ---------------------------------------------


async def _serve_floor(port: int) -> None:
    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b""  # an empty RouteResponse

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Route": grpc.unary_unary_rpc_method_handler(unary)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


# --- measuring ------------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes and their reaped children, from /proc."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        # fields[0] is the state (field 3); utime, stime, cutime, cstime are fields 14-17.
        total += sum(int(v) for v in fields[11:15]) / TICKS
    return total


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class Series:
    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    wall: float = 0.0
    server_cpu: float = 0.0
    upstream_cpu: float = 0.0
    client_cpu: float = 0.0
    rates: list[float] = field(default_factory=list)
    # From the gateway's decision log: each request's time from the start of its Call to its
    # outcome (`latency_ms`), and its upstream attempt's (`attempts[].duration_ms`).
    inside: list[float] = field(default_factory=list)
    upstream: list[float] = field(default_factory=list)


def children_cpu() -> float:
    """CPU of this process's reaped children (the h2load runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Load:
    """What h2load sends for a target: the URL, the request body file, HTTP/1.1 or not."""

    url: str
    body: Path
    headers: tuple[str, ...]
    h1: bool = False


@dataclass
class Target:
    name: str
    call: Callable[[], Awaitable[object]]
    server_pids: Callable[[], list[int]]
    uses_upstream: bool
    load: Load | None = None  # set when h2load drives it
    decision_log: Path | None = None  # a gateway's, read after each round


GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
CONNECTIONS = 8  # SO_REUSEPORT spreads connections over workers, so never just one


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length."""
    return b"\0" + struct.pack(">I", len(message)) + message


def h2load(load: Load, total: int, concurrency: int, log: Path) -> list[float]:
    """Run h2load once; the per-request latencies in seconds, from its request log."""
    if load.h1:  # one request in flight per HTTP/1.1 connection
        shape = ["-c", str(concurrency), "-m", "1", "--h1"]
    else:  # streams spread over up to CONNECTIONS HTTP/2 connections
        connections = min(concurrency, CONNECTIONS)
        shape = ["-c", str(connections), "-m", str(max(1, concurrency // connections))]
    headers = [arg for header in load.headers for arg in ("-H", header)]
    command = ["h2load", "-n", str(total), *shape, "-d", str(load.body), *headers]
    log.write_bytes(b"")  # h2load appends to its log
    done = subprocess.run(
        [*command, "--log-file", str(log), load.url], capture_output=True, text=True
    )
    if done.returncode != 0 or "0 failed, 0 errored, 0 timeout" not in done.stdout:
        raise RuntimeError(f"h2load failed:\n{done.stdout}\n{done.stderr}")
    latencies = []
    for line in log.read_text().splitlines():
        _, status, micros = line.split("\t")
        if status != "200":
            raise RuntimeError(f"{load.url} answered HTTP {status}")
        latencies.append(int(micros) / 1e6)
    return latencies


async def measure(
    target: Target, total: int, concurrency: int, upstream_pid: int, series: Series
) -> None:
    per_worker = max(1, total // concurrency)
    latencies: list[float] = []

    async def worker() -> None:
        for _ in range(per_worker):
            start = time.perf_counter()
            await target.call()
            latencies.append(time.perf_counter() - start)

    pids = target.server_pids()
    server0, upstream0 = cpu_seconds(pids), cpu_seconds([upstream_pid])
    client0 = self_cpu() + children_cpu()
    start = time.perf_counter()
    if target.load is not None:
        with tempfile.NamedTemporaryFile() as log:
            # h2load blocks this (idle) event loop for the round: nothing else runs meanwhile.
            latencies = h2load(target.load, per_worker * concurrency, concurrency, Path(log.name))
    else:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    series.server_cpu += cpu_seconds(pids) - server0
    series.upstream_cpu += cpu_seconds([upstream_pid]) - upstream0
    series.client_cpu += self_cpu() + children_cpu() - client0
    if target.decision_log is not None:
        # Each line is written before its answer is sent, and targets run one at a time: the
        # last len(latencies) lines are this round's.
        lines = target.decision_log.read_text().splitlines()[-len(latencies) :]
        for record in map(json.loads, lines):
            series.inside.append(record["latency_ms"])
            series.upstream += [a["duration_ms"] for a in record["attempts"]]
    series.latencies += latencies
    series.requests += len(latencies)
    series.wall += wall
    series.rates.append(len(latencies) / wall)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000


def check_decisions(path: Path) -> tuple[int, int]:
    """Lines in a decision log, and how many of them did not end OK."""
    lines = path.read_text().splitlines() if path.exists() else []
    return len(lines), sum(1 for line in lines if json.loads(line)["status"] != "OK")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- the gateways ---------------------------------------------------------------------------


def bench_config(upstream_url: str, tmp: Path, workers: int) -> dict[str, Any]:
    """The bundled configuration and policy with every model at the fake upstream."""
    import yaml

    data: dict[str, Any] = yaml.safe_load((ROOT / "config" / "celgate.yaml").read_text())
    for model in data["models"].values():
        model["base_url"] = upstream_url
        if model["provider"] == "openai":
            model["api_key_env"] = "BENCH_API_KEY"
    data["policy"] = {"dir": str(ROOT / "policies" / "routing"), "watch": False}
    data["ledger"] = {"backend": "sqlite", "path": str(tmp / "ledger.sqlite3")}
    data["audit"] = {"decision_log": str(tmp / "decisions.jsonl")}
    # gRPC only: gateways of the interleaved rounds run side by side and would all claim the
    # bundled config's HTTP port.
    data.pop("http", None)
    # Only when asked: an older tree (`--compare`) may not know the setting.
    data["server"].pop("workers", None)
    if workers > 1:
        data["server"]["workers"] = workers
    return data


def start_gateway(source: Path, data: dict[str, Any], tmp: Path) -> tuple[Any, str]:
    from tests.harness import GatewayProcess

    env = {"CELGATE_LOG_LEVEL": "WARNING", "BENCH_API_KEY": "sk-bench", "PYTHONPATH": str(source)}
    gateway = GatewayProcess(data, tmp, env=env)
    if source != ROOT:  # run the other tree's code with this tree's environment
        import tests.harness as harness

        saved = harness.ROOT
        harness.ROOT = source  # the gateway process's working folder, first on its path
        try:
            gateway.start(60)
        finally:
            harness.ROOT = saved
    else:
        gateway.start(60)
    return gateway, gateway.address


def process_tree(pid: int) -> list[int]:
    """The pid and its live children (a worker supervisor's workers)."""
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return pids
    for child in children:
        pids += process_tree(int(child))
    return pids


def wait_port(port: int) -> None:
    import socket

    end = time.monotonic() + 20
    while time.monotonic() < end:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


async def run(
    args: argparse.Namespace,
    upstream_url: str,
    upstream_pid: int,
    floor: str,
    floor_pid: int,
    gateways: dict[str, tuple[str, int, Path]],
) -> dict[str, int]:
    import openai

    from gateway.providers.http import JsonClient
    from gateway.v1 import gateway_pb2 as pb
    from gateway.v1 import gateway_pb2_grpc

    request = pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content=PROMPT)])
    channels: list[grpc.aio.Channel] = []
    targets: list[Target] = []

    def stub_for(address: str) -> Any:
        channel = grpc.aio.insecure_channel(address)
        channels.append(channel)
        return gateway_pb2_grpc.GatewayServiceStub(channel)

    def spread(address: str, count: int = 8) -> Any:
        """Stubs on `count` connections, taken in turn: SO_REUSEPORT spreads connections, not
        requests, over workers, so one connection would measure one worker. Each channel has
        its own subchannel pool, or grpc would share one connection between them."""
        stubs = []
        for _ in range(count):
            channel = grpc.aio.insecure_channel(
                address, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            channels.append(channel)
            stubs.append(gateway_pb2_grpc.GatewayServiceStub(channel))
        return itertools.cycle(stubs)

    bodies = Path(tempfile.mkdtemp())
    grpc_body = bodies / "request.grpc"
    grpc_body.write_bytes(grpc_frame(request.SerializeToString()))
    body = {"model": "gpt-5-mini", "messages": [{"role": "user", "content": PROMPT}]}
    json_body = bodies / "request.json"
    json_body.write_bytes(json.dumps(body).encode())
    h2 = args.client == "h2load"

    def grpc_load(address: str, method: str) -> Load | None:
        url = f"http://{address}/{SERVICE}/{method}"
        return Load(url, grpc_body, GRPC_HEADERS) if h2 else None

    if "floor" in args.only:
        floor_stub = stub_for(floor)
        targets.append(
            Target(
                "floor",
                lambda: floor_stub.Route(request),
                lambda: [floor_pid],
                False,
                grpc_load(floor, "Route"),
            )
        )
    for label, (address, pid, log) in gateways.items():
        stubs = spread(address)
        suffix = "" if label == "" else label
        pids = (lambda p: lambda: process_tree(p))(pid)
        if "route" in args.only:
            targets.append(
                Target(
                    "route" + suffix,
                    (lambda s: lambda: next(s).Route(request))(stubs),
                    pids,
                    False,
                    grpc_load(address, "Route"),
                    log,
                )
            )
        if "chat" in args.only:
            targets.append(
                Target(
                    "chat" + suffix,
                    (lambda s: lambda: next(s).Chat(request))(stubs),
                    pids,
                    True,
                    grpc_load(address, "Chat"),
                    log,
                )
            )
    # The gateway's own upstream client (one keep-alive aiohttp session) or h2load over
    # HTTP/1.1 and, for reference, the openai SDK as a service calling the provider without
    # celgate would use it.
    direct = JsonClient(upstream_url, {"authorization": "Bearer sk-bench"})
    sdk = openai.AsyncOpenAI(base_url=upstream_url, api_key="sk-bench", max_retries=0)
    if "direct" in args.only:

        async def via_direct() -> object:
            return (await direct.post("/chat/completions", body)).json()

        load = Load(
            upstream_url + "/chat/completions",
            json_body,
            ("content-type: application/json", "authorization: Bearer sk-bench"),
            h1=True,
        )
        targets.append(Target("direct", via_direct, lambda: [], True, load if h2 else None))
    if "sdk" in args.only:

        async def via_sdk() -> object:
            return await sdk.chat.completions.create(
                model="gpt-5-mini", messages=[{"role": "user", "content": PROMPT}]
            )

        targets.append(Target("direct-sdk", via_sdk, lambda: [], True))

    for target in targets:  # warm-up: connections, caches, the first policy evaluation
        for _ in range(200):
            await target.call()
    for target in targets:
        if target.name.startswith("chat"):
            answer: Any = await target.call()
            print(f"{target.name} answered by {answer.route.model!r}")

    print(f"load average before: {loadavg()}  (cores: {os.cpu_count()}, client: {args.client})")
    header = (
        f"{'target':<14}{'conc':>5}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'srv ms/req':>11}{'srv cores':>10}{'up ms/req':>10}{'cli ms/req':>11}"
    )
    results: dict[tuple[str, int], Series] = {}
    for concurrency in args.concurrency:
        print(header)
        per_round = max(concurrency, args.requests // args.rounds)
        series = {t.name: Series() for t in targets}
        for _ in range(args.rounds):
            for target in targets:
                await measure(target, per_round, concurrency, upstream_pid, series[target.name])
        for target in targets:
            s = series[target.name]
            results[(target.name, concurrency)] = s
            up = (
                f"{s.upstream_cpu / s.requests * 1000:>10.3f}"
                if target.uses_upstream
                else (f"{'-':>10}")
            )
            srv = s.server_cpu / s.requests * 1000
            print(
                f"{target.name:<14}{concurrency:>5}{statistics.median(s.rates):>8.0f}"
                f"{pct(s.latencies, 50):>8.3f}{pct(s.latencies, 99):>8.3f}"
                f"{srv:>11.3f}{s.server_cpu / s.wall:>10.2f}{up}"
                f"{s.client_cpu / s.requests * 1000:>11.3f}"
            )
        print(f"load average: {loadavg()}")
    print()

    def cpu(name: str, concurrency: int) -> float | None:
        s = results.get((name, concurrency))
        return s.server_cpu / s.requests if s and s.requests else None

    for concurrency in args.concurrency:
        floor_cpu, route_cpu = cpu("floor", concurrency), cpu("route", concurrency)
        for label in gateways:
            chat_cpu = cpu("chat" + label, concurrency)
            r_cpu = cpu("route" + label, concurrency) or route_cpu
            if chat_cpu and r_cpu:
                print(f"conc {concurrency}: chat{label} CPU / route CPU = {chat_cpu / r_cpu:.2f}")
            if r_cpu and floor_cpu:
                print(f"conc {concurrency}: route{label} CPU / floor CPU = {r_cpu / floor_cpu:.2f}")
    if 1 in args.concurrency:
        print("at one caller, where a request's time goes (p50, ms):")
        for target in targets:
            s = results[(target.name, 1)]
            if s.inside:
                client, inside = pct(s.latencies, 50), statistics.median(s.inside)
                upstream = statistics.median(s.upstream) if s.upstream else 0.0
                rest = client - inside
                print(
                    f"  {target.name}: {client:.3f} at the client = {inside:.3f} from the Call's"
                    f" start to its outcome (upstream attempt {upstream:.3f}) + {rest:.3f}"
                    " gRPC in and out, decoding, encoding, telemetry"
                )
    if 1 in args.concurrency and ("direct", 1) in results:
        direct_p50 = pct(results[("direct", 1)].latencies, 50)
        for label in gateways:
            if ("chat" + label, 1) in results:
                added = pct(results[("chat" + label, 1)].latencies, 50) - direct_p50
                print(f"added latency at one caller, chat{label} p50 - direct p50: {added:.3f} ms")
    for label in gateways:
        tree, _, workers = label.partition("/w")
        if workers and ("chat" + tree, 64) in results and ("chat" + label, 64) in results:
            base = statistics.median(results[("chat" + tree, 64)].rates)
            mine = statistics.median(results[("chat" + label, 64)].rates)
            print(f"chat{label} / chat{tree} throughput at 64 callers: {mine / base:.2f}x")
    for channel in channels:
        await channel.close()
    await direct.aclose()
    await sdk.close()
    shutil.rmtree(bodies)
    # Decision-log lines each gateway must have written: warm-up, the answer check, the rounds.
    expected = {label: 0 for label in gateways}
    for target in targets:
        for label in gateways:
            if target.name in ("route" + label, "chat" + label):
                answer_check = 1 if target.name.startswith("chat") else 0
                expected[label] += (
                    200
                    + answer_check
                    + sum(s.requests for (name, _), s in results.items() if name == target.name)
                )
    return expected


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000, help="per target and concurrency")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--only", default="floor,route,chat,direct")
    parser.add_argument("--compare", action="append", default=[], metavar="LABEL=DIR")
    parser.add_argument("--workers", default="1")
    parser.add_argument(
        "--client",
        choices=["h2load", "grpc"],
        default="h2load" if shutil.which("h2load") else "grpc",
        help="the load client (default: h2load when installed)",
    )
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        asyncio.run(_serve_upstream(args.serve_upstream))
        return
    if args.serve_floor:
        asyncio.run(_serve_floor(args.serve_floor))
        return
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.only = set(args.only.split(","))

    from tests.harness import free_port

    up_port, floor_port = free_port(), free_port()
    me = [sys.executable, str(Path(__file__).resolve())]
    upstream = subprocess.Popen([*me, "--serve-upstream", str(up_port)])
    floor = subprocess.Popen([*me, "--serve-floor", str(floor_port)])
    started: list[Any] = []
    try:
        wait_port(up_port)
        wait_port(floor_port)
        url = f"http://127.0.0.1:{up_port}/v1"
        gateways: dict[str, tuple[str, int, Path]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            trees = [("", ROOT)] + [
                ("@" + spec.partition("=")[0], Path(spec.partition("=")[2]).resolve())
                for spec in args.compare
            ]
            for label, source in trees:
                for workers in (int(w) for w in args.workers.split(",")):
                    name = label + ("" if workers == 1 else f"/w{workers}")
                    folder = Path(tmp) / (name.replace("/", "_").replace("@", "at_") or "main")
                    folder.mkdir()
                    gateway, address = start_gateway(
                        source, bench_config(url, folder, workers), folder
                    )
                    started.append(gateway)
                    gateways[name] = (address, gateway.proc.pid, folder / "decisions.jsonl")
            expected = asyncio.run(
                run(args, url, upstream.pid, f"127.0.0.1:{floor_port}", floor.pid, gateways)
            )
            for gateway in started:
                gateway.terminate()
                gateway.wait(30)
            failed = False
            for label, gateway in zip(gateways, started, strict=True):
                check = check_decisions(gateway.log_path.parent / "decisions.jsonl")
                print(
                    f"decision-log lines written by gateway{label or ' (this tree)'}: {check[0]}"
                    f" (expected {expected[label]}), not OK: {check[1]}"
                )
                failed = failed or check != (expected[label], 0)
            if failed:
                sys.exit("a request failed or left no decision-log line")
    finally:
        for gateway in started:
            if gateway.proc.poll() is None:
                gateway.proc.kill()
        upstream.terminate()
        floor.terminate()
        upstream.wait(10)
        floor.wait(10)


if __name__ == "__main__":
    main()
