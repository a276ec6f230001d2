"""Both surfaces run one pipeline: a residency refusal, a budget refusal and a rate limit come
out the same over gRPC and over HTTP (same reason, the matching status, the same decision-log
record apart from its id and timing), and the tenant's budget and rate limit are shared by the
two surfaces rather than kept per surface."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest
from google.rpc import error_details_pb2

from gateway.auth import hash_key
from gateway.server import Gateway
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.fakes._server import Reply
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import make_config, ollama_model, openai_model, serve, status_detail

pytestmark = pytest.mark.integration

KEY = "cg_shared_" + "s" * 30
LIMITED_KEY = "cg_limit__" + "l" * 30
BROKE_KEY = "cg_broke__" + "b" * 30
# Fields of a decision-log record that differ between any two requests.
VOLATILE = {"decision_id", "time", "latency_ms", "trace_id"}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeOllama, FakeOpenAI]]:
    with FakeOllama() as ollama, FakeOpenAI() as cloud:
        yield ollama, cloud


@pytest.fixture
async def surfaces(
    upstreams: tuple[FakeOllama, FakeOpenAI], tmp_path: Path
) -> AsyncIterator[tuple[Gateway, gateway_pb2_grpc.GatewayServiceStub, Path]]:
    ollama, cloud = upstreams
    ollama.reset()
    cloud.reset()
    log = tmp_path / "decisions.jsonl"
    priced = {"input_per_mtok": 0.0, "output_per_mtok": 10.0}
    config = make_config(
        {"local": ollama_model(ollama.url), "cloud": openai_model(cloud.url, price=priced)},
        "local",
        http={"listen": "127.0.0.1:0"},
        audit={"decision_log": str(log)},
        auth={
            "mode": "api_key",
            "api_keys": [
                {"tenant": "team-a", "sha256": hash_key(KEY)},
                {"tenant": "team-b", "sha256": hash_key(LIMITED_KEY)},
                {"tenant": "team-c", "sha256": hash_key(BROKE_KEY)},
            ],
        },
        tenants={"team-b": {"rate_limit": {"requests_per_minute": 2}}},
        budgets=[{"tenant": "team-c", "window": "day", "limit_usd": 0.015}],
    )
    async with serve(config) as (gateway, stub):
        yield gateway, stub, log


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


def sdk(gateway: Gateway, key: str) -> openai.AsyncOpenAI:
    assert gateway.http is not None
    return openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{gateway.http.port}/v1", api_key=key, max_retries=0
    )


def records(log: Path) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return {line["decision_id"]: line for line in lines}


def stable(record: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in record.items() if k not in VOLATILE}
    if isinstance(kept.get("policy_inputs"), dict):
        # The policy's `now` is the request's own time.
        kept["policy_inputs"] = {k: v for k, v in kept["policy_inputs"].items() if k != "now"}
    return kept


async def grpc_refusal(
    stub: gateway_pb2_grpc.GatewayServiceStub, key: str, request: pb.ChatRequest
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.Chat(request, metadata=bearer(key))
    return failed.value


def decision_id(error: grpc.aio.AioRpcError) -> str:
    return dict(error.trailing_metadata() or ())["celgate-decision-id"]


async def test_residency_refusal_is_the_same_on_both_surfaces(
    surfaces: tuple[Gateway, gateway_pb2_grpc.GatewayServiceStub, Path],
    upstreams: tuple[FakeOllama, FakeOpenAI],
) -> None:
    gateway, stub, log = surfaces
    text = "CONFIDENTIAL: the merger terms"
    rpc = await grpc_refusal(
        stub,
        KEY,
        pb.ChatRequest(
            messages=[pb.Message(role=pb.ROLE_USER, content=text)], preferred_model="cloud"
        ),
    )
    with pytest.raises(openai.PermissionDeniedError) as http:
        await sdk(gateway, KEY).chat.completions.create(
            model="cloud", messages=[{"role": "user", "content": text}]
        )
    assert rpc.code() == grpc.StatusCode.PERMISSION_DENIED and http.value.status_code == 403
    info = status_detail(rpc, error_details_pb2.ErrorInfo)
    assert http.value.code == info.reason == "DATA_RESIDENCY"
    assert http.value.response.json()["error"]["message"] == rpc.details()
    logged = records(log)
    via_grpc = logged[decision_id(rpc)]
    via_http = logged[http.value.response.headers["x-celgate-decision-id"]]
    assert stable(via_grpc) == stable(via_http)
    assert via_http["enforcement"] == "denied" and via_http["tenant"] == "team-a"
    assert upstreams[1].request_count == 0


async def test_budget_refusal_is_the_same_and_the_budget_is_shared(
    surfaces: tuple[Gateway, gateway_pb2_grpc.GatewayServiceStub, Path],
    upstreams: tuple[FakeOllama, FakeOpenAI],
) -> None:
    gateway, stub, log = surfaces
    _, cloud = upstreams
    # $0.015 covers one $0.01 call: spent over HTTP, it is gone for gRPC too.
    cloud.enqueue(Reply(content="ok", completion_tokens=1000))
    await sdk(gateway, BROKE_KEY).chat.completions.create(
        model="cloud", messages=[{"role": "user", "content": "hi"}], max_tokens=1000
    )
    request = pb.ChatRequest(
        messages=[pb.Message(role=pb.ROLE_USER, content="hi")],
        preferred_model="cloud",
        max_tokens=1000,
    )
    rpc = await grpc_refusal(stub, BROKE_KEY, request)
    with pytest.raises(openai.RateLimitError) as http:
        await sdk(gateway, BROKE_KEY).chat.completions.create(
            model="cloud", messages=[{"role": "user", "content": "hi"}], max_tokens=1000
        )
    assert rpc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and http.value.status_code == 429
    quota = status_detail(rpc, error_details_pb2.QuotaFailure)
    assert http.value.code == "BUDGET_EXHAUSTED"
    assert http.value.response.json()["celgate"]["subject"] == quota.violations[0].subject
    assert http.value.response.json()["error"]["message"] == rpc.details()
    logged = records(log)
    assert stable(logged[decision_id(rpc)]) == stable(
        logged[http.value.response.headers["x-celgate-decision-id"]]
    )
    assert cloud.request_count == 1


async def test_rate_limit_is_the_same_and_shared(
    surfaces: tuple[Gateway, gateway_pb2_grpc.GatewayServiceStub, Path],
) -> None:
    gateway, stub, log = surfaces
    request = pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content="hi")])
    client = sdk(gateway, LIMITED_KEY)
    # Two requests a minute: one per surface uses the tenant's whole allowance.
    await stub.Chat(request, metadata=bearer(LIMITED_KEY))
    await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
    rpc = await grpc_refusal(stub, LIMITED_KEY, request)
    with pytest.raises(openai.RateLimitError) as http:
        await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}]
        )
    assert rpc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = status_detail(rpc, error_details_pb2.RetryInfo)
    assert http.value.code == status_detail(rpc, error_details_pb2.ErrorInfo).reason
    assert http.value.code == "RATE_LIMITED"
    grpc_delay = retry.retry_delay.ToNanoseconds() / 1e9
    http_delay = int(http.value.response.headers["retry-after-ms"]) / 1000
    assert http_delay == pytest.approx(grpc_delay, abs=1.0)
    logged = records(log)
    assert stable(logged[decision_id(rpc)]) == stable(
        logged[http.value.response.headers["x-celgate-decision-id"]]
    )
