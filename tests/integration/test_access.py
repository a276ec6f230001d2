"""Tenants through the real gateway: API keys name the tenant, per-tenant model lists and
classification ceilings hold whatever the policy says, rate limits refuse with RetryInfo, and
an unauthenticated non-loopback listener refuses to start."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from gateway.auth import hash_key
from gateway.server import Gateway
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc, policy_pb2
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import (
    config_data,
    make_config,
    ollama_model,
    openai_model,
    serve,
    serve_once,
    status_detail,
)

pytestmark = pytest.mark.integration

Stub = gateway_pb2_grpc.GatewayServiceStub
KEY_A = "cg_team_a_" + "a" * 30
KEY_B = "cg_team_b_" + "b" * 30


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeOllama, FakeOpenAI]]:
    with FakeOllama() as ollama, FakeOpenAI() as cloud:
        yield ollama, cloud


@pytest.fixture
async def gateway(upstreams: tuple[FakeOllama, FakeOpenAI]) -> AsyncIterator[tuple[Gateway, Stub]]:
    ollama, cloud = upstreams
    ollama.reset()
    cloud.reset()
    config = make_config(
        {"local": ollama_model(ollama.url), "cloud": openai_model(cloud.url)},
        "local",
        auth={
            "mode": "api_key",
            "api_keys": [
                {"tenant": "team-a", "sha256": hash_key(KEY_A)},
                {"tenant": "team-b", "sha256": hash_key(KEY_B)},
            ],
        },
        tenants={
            "team-a": {
                "allowed_models": ["local"],
                "max_declared_classification": "CONFIDENTIAL",
                "rate_limit": {"requests_per_minute": 3},
            }
        },
    )
    async with serve(config) as pair:
        yield pair


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


def chat(**fields: Any) -> pb.ChatRequest:
    return pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content="hello")], **fields)


async def test_the_key_names_the_tenant_the_policy_sees(gateway: tuple[Gateway, Stub]) -> None:
    _, stub = gateway
    route = pb.RouteRequest(messages=[pb.Message(role=pb.ROLE_USER, content="hi")])
    assert (await stub.Route(route, metadata=bearer(KEY_A))).context.tenant == "team-a"
    assert (await stub.Route(route, metadata=bearer(KEY_B))).context.tenant == "team-b"
    for metadata in (bearer("cg_wrong_" + "x" * 30), None):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Route(route, metadata=metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_policy_cannot_route_a_tenant_outside_its_models(
    gateway: tuple[Gateway, Stub], upstreams: tuple[FakeOllama, FakeOpenAI]
) -> None:
    _, cloud = upstreams
    _, stub = gateway
    # The test policy routes to the preferred model: `cloud` is outside team-a's list.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Chat(chat(preferred_model="cloud"), metadata=bearer(KEY_A))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert status_detail(info.value, error_details_pb2.ErrorInfo).reason == "MODEL_NOT_ALLOWED"
    # A fallback outside the list is dropped, not tried.
    reply = await stub.Chat(chat(labels={"fallbacks": "cloud"}), metadata=bearer(KEY_A))
    assert reply.route.model == "local"
    route = await stub.Route(
        pb.RouteRequest(
            messages=[pb.Message(role=pb.ROLE_USER, content="hi")], labels={"fallbacks": "cloud"}
        ),
        metadata=bearer(KEY_A),
    )
    dropped = [c for c in route.candidates if not c.allowed]
    assert [c.model for c in dropped] == ["cloud"]
    assert "allowed models" in dropped[0].reason
    assert cloud.request_count == 0
    # Another tenant without a list may use it.
    reply = await stub.Chat(chat(preferred_model="cloud"), metadata=bearer(KEY_B))
    assert reply.route.model == "cloud"


async def test_classification_ceiling(gateway: tuple[Gateway, Stub]) -> None:
    _, stub = gateway
    request = chat(classification=policy_pb2.CLASSIFICATION_RESTRICTED)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Chat(request, metadata=bearer(KEY_A))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert status_detail(info.value, error_details_pb2.ErrorInfo).reason == "CLASSIFICATION_CEILING"


async def test_rate_limit_refuses_with_retry_info(gateway: tuple[Gateway, Stub]) -> None:
    _, stub = gateway
    for _ in range(3):
        await stub.Chat(chat(), metadata=bearer(KEY_A))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Chat(chat(), metadata=bearer(KEY_A))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = status_detail(info.value, error_details_pb2.RetryInfo)
    assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 60
    # Other tenants are not limited by team-a's bucket; Route spends nothing.
    await stub.Chat(chat(), metadata=bearer(KEY_B))
    await stub.Route(
        pb.RouteRequest(messages=[pb.Message(role=pb.ROLE_USER, content="hi")]),
        metadata=bearer(KEY_A),
    )


def test_no_auth_on_a_non_loopback_address_refuses_to_start(tmp_path: Path) -> None:
    data = config_data({"local": ollama_model("http://127.0.0.1:9")}, "local")
    data["server"]["listen"] = "0.0.0.0:0"
    proc = serve_once(data, tmp_path)
    assert proc.returncode == 2
    assert "auth.mode is 'none'" in proc.stderr and "not a loopback" in proc.stderr
    assert "Traceback" not in proc.stderr
