"""Hot reload on a running gateway: a valid new policy changes routing without a restart; an
invalid one keeps the last good revision serving and health SERVING."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.server import Gateway
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.harness import TEST_POLICY, make_config, ollama_model, serve

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


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Gateway, Stub, Path]]:
    folder = tmp_path / "policy"
    shutil.copytree(TEST_POLICY, folder)
    config = make_config(
        {"local": ollama_model("http://127.0.0.1:9"), "other": ollama_model("http://127.0.0.1:9")},
        "local",
        policy={"dir": str(folder), "watch": True},
    )
    async with serve(config) as (gw, stub):
        yield gw, stub, folder / "policy.yaml"


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
