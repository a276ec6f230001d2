"""Hot reload on a running gateway: a valid new policy changes routing without a restart; an
invalid one keeps the last good revision serving and health SERVING; and no bad save, whatever
file it is in, stops the watcher: it is reported (file:line, log, metric, `last_error`) and the
next good save is served."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from gateway.server import Gateway, running
from gateway.telemetry import METRIC_POLICY_RELOAD_FAILURES, Telemetry
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.harness import TEST_POLICY, make_config, ollama_model

pytestmark = pytest.mark.integration

Stub = gateway_pb2_grpc.GatewayServiceStub
ROUTE = pb.RouteRequest(messages=[pb.Message(role=pb.ROLE_USER, content="hello")])

TO_OTHER = """
name: preferred
rule:
  id: switched
  match:
    - output: >
        RouteDecision{model: "other"}
"""
BROKEN = """
name: preferred
rule:
  match:
    - output: >
        RouteDecision{modle: "other"}
"""


READER = "reader"


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Gateway, Stub, Path]]:
    folder = tmp_path / "policy"
    shutil.copytree(TEST_POLICY, folder)
    config = make_config(
        {"local": ollama_model("http://127.0.0.1:9"), "other": ollama_model("http://127.0.0.1:9")},
        "local",
        policy={"dir": str(folder), "watch": True},
    )
    reader = InMemoryMetricReader()
    telemetry = Telemetry(config.models, meter_provider=MeterProvider(metric_readers=[reader]))
    async with (
        running(config, telemetry) as gw,
        grpc.aio.insecure_channel(gw.address) as channel,
    ):
        gw.__dict__[READER] = reader  # the test reads the failure counter through it
        yield gw, Stub(channel), folder / "policy.yaml"


async def routed(stub: Stub) -> pb.RouteResponse:
    return await stub.Route(ROUTE)


async def wait_for(stub: Stub, model: str, timeout: float = 10.0) -> pb.RouteResponse:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        reply = await routed(stub)
        if reply.route.model == model or asyncio.get_running_loop().time() > deadline:
            return reply
        await asyncio.sleep(0.05)


async def health(gw: Gateway) -> int:
    async with grpc.aio.insecure_channel(gw.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        return int(reply.status)


async def test_valid_policy_changes_routing_without_restart(
    gateway: tuple[Gateway, Stub, Path],
) -> None:
    gw, stub, policy = gateway
    before = await routed(stub)
    assert (before.route.model, before.route.rule) == ("local", "preferred/2")
    assert before.route.policy_name == "preferred" and before.route.policy_revision
    policy.write_text(TO_OTHER)
    after = await wait_for(stub, "other")
    assert (after.route.model, after.route.rule) == ("other", "switched/1")
    assert after.route.policy_revision != before.route.policy_revision
    assert await health(gw) == health_pb2.HealthCheckResponse.SERVING


async def test_invalid_policy_keeps_the_last_good_one(
    gateway: tuple[Gateway, Stub, Path], caplog: pytest.LogCaptureFixture
) -> None:
    gw, stub, policy = gateway
    before = await routed(stub)
    policy.write_text(BROKEN)
    store = gw.pipeline.policies
    for _ in range(200):
        if store.last_error:
            break
        await asyncio.sleep(0.05)
    assert store.last_error is not None and "policy.yaml:6:" in store.last_error
    after = await routed(stub)
    assert after.route.policy_revision == before.route.policy_revision
    assert after.route.model == "local"
    assert await health(gw) == health_pb2.HealthCheckResponse.SERVING
    assert "still serving revision" in caplog.text


def reload_failures(gw: Gateway) -> int:
    reader: InMemoryMetricReader = gw.__dict__[READER]
    data = reader.get_metrics_data()
    total = 0
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == METRIC_POLICY_RELOAD_FAILURES:
                    total += sum(int(getattr(p, "value", 0)) for p in metric.data.data_points)
    return total


async def wait_error(gw: Gateway, timeout: float = 10.0) -> str:
    store = gw.pipeline.policies
    for _ in range(int(timeout / 0.05)):
        if store.last_error is not None:
            break
        await asyncio.sleep(0.05)
    assert store.last_error is not None, "the failed reload was not reported"
    return store.last_error


async def reported(gw: Gateway, stub: Stub, caplog: pytest.LogCaptureFixture, where: str) -> str:
    """A bad save is reported with file:line, counted and logged; the last good revision
    keeps serving and every watcher task is still running."""
    error = await wait_error(gw)
    assert where in error, error
    assert reload_failures(gw) >= 1
    assert "policy reload failed, still serving revision" in caplog.text
    serving = await routed(stub)
    assert (serving.route.model, serving.route.rule) == ("local", "preferred/2")
    assert await health(gw) == health_pb2.HealthCheckResponse.SERVING
    assert all(not task.done() for task in gw._tasks), "a watcher task ended"
    return error


async def next_good_save_served(gw: Gateway, stub: Stub, policy: Path) -> None:
    await asyncio.to_thread(policy.write_text, TO_OTHER)
    after = await wait_for(stub, "other")
    assert (after.route.model, after.route.rule) == ("other", "switched/1")
    assert gw.pipeline.policies.last_error is None


async def test_reload_survives_an_invalid_import_name(
    gateway: tuple[Gateway, Stub, Path], caplog: pytest.LogCaptureFixture
) -> None:
    gw, stub, policy = gateway
    policy.write_text(
        "name: preferred\nimports:\n  - name: gateway.v1.RouteDecision\n"
        '  - name: "not a name!"\nrule:\n  match:\n'
        '    - output: >\n        RouteDecision{model: "other"}\n'
    )
    error = await reported(gw, stub, caplog, f"{policy}:4:11:")
    assert "invalid qualified name" in error
    await next_good_save_served(gw, stub, policy)


async def test_reload_survives_a_config_function_without_implementation(
    gateway: tuple[Gateway, Stub, Path], caplog: pytest.LogCaptureFixture
) -> None:
    gw, stub, policy = gateway
    config = policy.parent / "config.yaml"
    config.write_text(
        "name: extra\nfunctions:\n  - name: tier\n    overloads:\n"
        "      - id: tier_string\n        args:\n          - type_name: string\n"
        "        return:\n          type_name: string\n"
    )
    error = await reported(gw, stub, caplog, f"{config}:5:")
    assert "tier_string" in error and "no implementation" in error
    # A served folder has no environment of its own: the fix is to remove the file.
    config.unlink()
    await next_good_save_served(gw, stub, policy)


async def test_reload_survives_a_misspelled_enum_in_tests(
    gateway: tuple[Gateway, Stub, Path], caplog: pytest.LogCaptureFixture
) -> None:
    gw, stub, policy = gateway
    tests = policy.parent / "tests.yaml"
    body = (
        "section:\n  - name: routing\n    tests:\n      - name: planning\n"
        "        input:\n          request:\n            value: {task_type: %s}\n"
        "        output:\n          expr: 'RouteDecision{model: \"other\"}'\n"
    )
    tests.write_text(body % "TASK_TYPE_PLANING")
    error = await reported(gw, stub, caplog, f"{tests}:6:")
    assert "TASK_TYPE_PLANING" in error
    tests.write_text(body % "TASK_TYPE_PLANNING")
    await next_good_save_served(gw, stub, policy)
