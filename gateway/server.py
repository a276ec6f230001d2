"""Assembles and runs the grpc.aio server: the gateway service, health, reflection, TLS,
policy hot reload and signals.

Health is NOT_SERVING until the configuration is loaded and a valid policy serves; on SIGTERM
it flips to NOT_SERVING, the server stops accepting new calls, in-flight calls get the grace
period to finish, and the process exits 0. SIGHUP re-reads the configuration's access settings
(API keys, rate limits) so a revoked key stops working without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.access import AccessReloader
from gateway.auth import Authenticator, server_credentials
from gateway.budget import open_ledger
from gateway.config import Config
from gateway.http.server import HttpServer, start_http
from gateway.pipeline import Pipeline
from gateway.policy import CompiledPolicy, PolicyError, PolicyStore
from gateway.policy.shadow import ShadowPolicy
from gateway.pricing import Pricing
from gateway.providers.dispatch import Dispatcher
from gateway.ratelimit import TenantRateLimiter, open_rate_limiter
from gateway.service import SERVICE_NAME, GatewayService, add_to_server
from gateway.telemetry import Telemetry

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Gateway:
    """A bound, started server. `port` is the bound port (useful with port 0)."""

    config: Config
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    pipeline: Pipeline
    authenticator: Authenticator
    limiter: TenantRateLimiter
    telemetry: Telemetry
    port: int
    # The plaintext health-only listener (`server.health_listen`), when configured.
    health_server: grpc.aio.Server | None = None
    health_port: int = 0
    access: AccessReloader | None = None
    # The OpenAI-compatible HTTP listener (`http.listen`), when configured.
    http: HttpServer | None = None
    _stop_watch: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def address(self) -> str:
        host = self.config.server.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def set_serving(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    def reload_access(self, config: Config | None = None) -> bool:
        """Apply the access settings (keys, key file, rate limits) of `config`, or of the
        configuration file as it is now (other settings need a restart)."""
        assert self.access is not None
        if config is None:
            return self.access.reload_config()
        applied = self.access.apply(config)
        if applied:
            log.info("access settings reloaded")
        return applied

    async def stop(self, grace: float | None = None) -> None:
        """Drain: refuse new calls, let in-flight ones finish within the grace period."""
        await self.health.enter_graceful_shutdown()
        self._stop_watch.set()
        grace = self.config.server.grace_period_s if grace is None else grace
        if self.http is not None:
            await self.http.stop()
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.pipeline.aclose()
        # Flushing may wait on the collector (bounded): keep the loop free meanwhile.
        await asyncio.to_thread(self.telemetry.shutdown)


def _bind(
    server: grpc.aio.Server,
    address: str,
    field_name: str,
    credentials: grpc.ServerCredentials | None,
) -> int:
    """Add the listening port; an address that cannot be bound is an error naming the field."""
    port: int
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpc's "Failed to bind"
        port = 0
    if port == 0:
        raise OSError(
            f"cannot listen on {address} ({field_name}): the address is in use or not "
            "available on this host"
        )
    return port


def _load_policy(store: PolicyStore) -> None:
    try:
        store.load()
    except PolicyError as exc:
        # Keep running: the watcher may bring a valid policy; until then health says why not.
        log.error("no valid routing policy, health stays NOT_SERVING:\n%s", exc)


async def start(
    config: Config, telemetry: Telemetry | None = None, *, config_path: Path | None = None
) -> Gateway:
    """Start serving. `telemetry` defaults to what the OTEL_* environment and the config's
    `audit` section ask for (tests pass in-memory exporters). `config_path` is the file
    reloads re-read (without it they reuse the last applied configuration)."""
    if telemetry is None:
        telemetry = Telemetry.from_config(config)
    options = [
        ("grpc.max_receive_message_length", config.server.max_message_bytes),
        ("grpc.max_send_message_length", config.server.max_message_bytes),
        # Workers share the port (gateway/workers.py); one process keeps it exclusive, so a
        # second gateway on the same address fails to bind instead of splitting the traffic.
        ("grpc.so_reuseport", 1 if config.server.workers > 1 else 0),
    ]
    server = grpc.aio.server(options=options)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, NOT_SERVING)

    policies = PolicyStore(config.resolve(config.policy.dir))
    _load_policy(policies)
    if policies.last_error is not None:
        telemetry.policy_changed(None, policies.last_error)
    pricing = Pricing.from_config(config)
    ledger = await open_ledger(config)
    limiter = open_rate_limiter(config)
    shadow = None
    if config.policy.shadow is not None:
        shadow = ShadowPolicy(config.resolve(config.policy.shadow.dir), config, pricing)
        shadow.load()
    pipeline = Pipeline(
        config, Dispatcher(config), policies, limiter, ledger, pricing, shadow=shadow
    )
    authenticator = Authenticator.from_config(config)
    service = GatewayService(
        pipeline,
        authenticator,
        telemetry,
        limits=config.limits,
        default_deadline_s=config.server.default_deadline_s,
    )
    add_to_server(service, server)

    port = _bind(server, config.server.listen, "server.listen", server_credentials(config))
    health_server: grpc.aio.Server | None = None
    health_port = 0
    if config.server.health_listen is not None:
        # Health only, in plaintext: kubelet's gRPC probes cannot speak TLS.
        health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        health_port = _bind(
            health_server, config.server.health_listen, "server.health_listen", None
        )
        await health_server.start()
    # GET /metrics on its own plaintext port (telemetry.prometheus.listen), never this one.
    telemetry.start()
    await server.start()
    gateway = Gateway(
        config, server, health_servicer, pipeline, authenticator, limiter, telemetry, port
    )
    gateway.health_server, gateway.health_port = health_server, health_port
    gateway.access = AccessReloader(config, config_path, authenticator, limiter)
    if config.http.listen is not None:
        try:
            gateway.http = await start_http(config, pipeline, authenticator, telemetry)
        except BaseException:
            await gateway.stop(grace=0)
            raise

    loop = asyncio.get_running_loop()

    def on_policy_change(policy: CompiledPolicy | None, error: str | None) -> None:
        # Called from the reload thread; health is updated on the loop.
        asyncio.run_coroutine_threadsafe(gateway.set_serving(policy is not None), loop)
        telemetry.policy_changed(policy, error)

    policies.on_change = on_policy_change
    if config.policy.watch:
        gateway._tasks.append(asyncio.create_task(policies.watch(gateway._stop_watch)))
        if shadow is not None:
            gateway._tasks.append(asyncio.create_task(shadow.watch(gateway._stop_watch)))
    if config.auth.api_keys_file is not None:
        keys_file = config.resolve(config.auth.api_keys_file)
        gateway._tasks.append(
            asyncio.create_task(gateway.access.watch_keys(keys_file, gateway._stop_watch))
        )
    await gateway.set_serving(policies.current is not None)
    log.info("celgate listening on %s", gateway.address)
    return gateway


@asynccontextmanager
async def running(config: Config, telemetry: Telemetry | None = None) -> AsyncIterator[Gateway]:
    """Start a gateway for the duration of a block (tests, benchmarks)."""
    gateway = await start(config, telemetry)
    try:
        yield gateway
    finally:
        await gateway.stop(grace=0)


def freeze_startup_heap() -> None:
    """Keep what start-up built (the policy, the detectors, the personal-data models, the
    protobuf descriptors: ~160,000 objects with the bundled configuration) out of every later
    garbage collection. They live as long as the process; a full collection that walks them
    stops every request for ~90 ms here (bench/bench_throughput.py measures the rest), one
    that only walks what serving allocated takes well under a millisecond. Collect first, so
    start-up's garbage is not kept forever."""
    gc.collect()
    gc.freeze()


async def serve(config: Config, config_path: Path | None = None) -> None:
    """Run until SIGTERM or SIGINT, then drain and return. SIGHUP reloads access settings."""
    gateway = await start(config, config_path=config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:
        # The configuration file and the key file as they are now (never the start-up set).
        if config_path is not None:
            gateway.reload_access()

    loop.add_signal_handler(signal.SIGHUP, reload)
    # After the handlers: a signal during the collection is handled, not fatal.
    freeze_startup_heap()
    await stop.wait()
    log.info("draining for up to %.1fs", config.server.grace_period_s)
    await gateway.stop()
    log.info("stopped")
