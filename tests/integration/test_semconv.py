"""The semantic-convention attributes of real requests (a real grpc.aio gateway on loopback,
the upstream fakes over real HTTP, the SDK's in-memory exporters): the stable RPC attributes and
`rpc.server.call.duration`, the GenAI request and response attributes, cache and reasoning token
counts, time to first chunk for streams, the cost's currency and where cost may be summed, and
the promoted request labels."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.trace import SpanKind

from gateway import telemetry as t
from gateway.telemetry.record import stable_rpc_only
from gateway.v1 import gateway_pb2 as pb
from tests.fakes._server import Reply
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import make_config, ollama_model, openai_model
from tests.integration.test_telemetry import CLOUD_PRICE, Observed, attrs, observed_gateway

pytestmark = pytest.mark.integration

SERVER_CHAT = "gateway.v1.GatewayService/Chat"
SERVER_STREAM = "gateway.v1.GatewayService/ChatStream"
STOPS = ("###", "END-OF-ANSWER")


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=text)


@pytest.fixture
async def obs(ollama: FakeOllama, cloud: FakeOpenAI, tmp_path: Path) -> AsyncIterator[Observed]:
    ollama.reset()
    cloud.reset()
    models = {
        "local": ollama_model(ollama.url),
        "cloud": openai_model(cloud.url, price=CLOUD_PRICE),
    }
    config = make_config(models, "local", telemetry={"labels": {"promote": ["project"]}})
    async with observed_gateway(config, tmp_path) as observed:
        yield observed


def one(spans: list[Any], kind: SpanKind) -> dict[str, Any]:
    (span,) = [s for s in spans if s.kind == kind]
    return attrs(span)


async def test_request_and_response_attributes_of_a_chat(obs: Observed, cloud: FakeOpenAI) -> None:
    cloud.enqueue(
        Reply(
            content='{"a": 1}',
            prompt_tokens=120,
            completion_tokens=30,
            cached_tokens=100,
            reasoning_tokens=12,
        )
    )
    reply = await obs.stub.Chat(
        pb.ChatRequest(
            messages=[user("Answer in JSON")],
            preferred_model="cloud",
            max_tokens=64,
            temperature=0.25,
            top_p=0.9,
            stop=list(STOPS),
            response_format=pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT),
            labels={"project": "atlas", "team": "core"},
        )
    )
    spans = obs.finished()
    c = one(spans, SpanKind.CLIENT)
    assert c[t.GEN_AI_REQUEST_MAX_TOKENS] == 64
    assert c[t.GEN_AI_REQUEST_TEMPERATURE] == 0.25
    assert c[t.GEN_AI_REQUEST_TOP_P] == 0.9
    assert c[t.GEN_AI_OUTPUT_TYPE] == "json"
    assert c[t.GEN_AI_RESPONSE_ID].startswith("chatcmpl-")
    assert c[t.GEN_AI_USAGE_INPUT_TOKENS] == 120 and c[t.GEN_AI_USAGE_OUTPUT_TOKENS] == 30
    assert c[t.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 100
    assert c[t.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 12
    assert c[t.GEN_AI_USAGE_COST] == pytest.approx(reply.route.cost_usd)
    assert c[t.CELGATE_COST_CURRENCY] == "USD"
    # Stop sequences are caller content: counted, never recorded.
    assert c[t.CELGATE_REQUEST_STOP_SEQUENCES] == 2
    assert "gen_ai.request.stop_sequences" not in c
    exported = json.dumps([s.to_json() for s in spans])
    assert all(stop not in exported for stop in STOPS)
    # The promoted label is on both spans; the unpromoted one on neither.
    s = one(spans, SpanKind.SERVER)
    for span in (c, s):
        assert span["celgate.label.project"] == "atlas"
        assert "celgate.label.team" not in span
    assert "core" not in exported

    assert s[t.RPC_SYSTEM_NAME] == "grpc"
    assert s[t.RPC_METHOD] == SERVER_CHAT
    assert s[t.RPC_RESPONSE_STATUS_CODE] == "OK"
    assert s[t.CELGATE_COST_TOTAL] == pytest.approx(reply.route.cost_usd)
    assert t.GEN_AI_USAGE_COST not in s
    (line,) = obs.decisions()
    assert line["labels"] == {"project": "atlas"}

    (duration,) = obs.points(t.METRIC_SERVER_CALL_DURATION)
    assert dict(duration.attributes) == {
        t.RPC_SYSTEM_NAME: "grpc",
        t.RPC_METHOD: SERVER_CHAT,
        t.RPC_RESPONSE_STATUS_CODE: "OK",
    }
    assert duration.count == 1 and duration.sum > 0
    tokens = {p.attributes[t.GEN_AI_TOKEN_TYPE]: p for p in obs.points(t.METRIC_TOKEN_USAGE)}
    assert tokens["input"].sum == 120 and tokens["output"].sum == 30
    assert tokens["input"].attributes[t.CELGATE_TENANT] == "default"
    assert tokens["input"].attributes["celgate.label.project"] == "atlas"
    # Time to first chunk is for streams only.
    assert obs.points(t.METRIC_TIME_TO_FIRST_CHUNK) == []
    assert t.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK not in c
    (cost,) = obs.points(t.METRIC_COST)
    assert cost.attributes["celgate.label.project"] == "atlas"
    assert "celgate.label.team" not in cost.attributes


async def test_a_stream_records_its_time_to_first_chunk(obs: Observed, cloud: FakeOpenAI) -> None:
    cloud.enqueue(Reply(content="one two three four", prompt_tokens=5, completion_tokens=4))
    parts = [
        p
        async for p in obs.stub.ChatStream(
            pb.ChatStreamRequest(messages=[user("count")], preferred_model="cloud")
        )
    ]
    assert parts
    await obs.settled(1)
    (client,) = obs.clients()
    c = attrs(client)
    first_chunk = c[t.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert client.end_time is not None and client.start_time is not None
    assert 0 < first_chunk <= (client.end_time - client.start_time) / 1e9
    assert c[t.GEN_AI_RESPONSE_ID].startswith("chatcmpl-")
    assert one(obs.finished(), SpanKind.SERVER)[t.RPC_METHOD] == SERVER_STREAM
    (point,) = obs.points(t.METRIC_TIME_TO_FIRST_CHUNK)
    assert point.count == 1 and point.sum == pytest.approx(first_chunk)
    assert point.attributes[t.GEN_AI_REQUEST_MODEL] == "gpt-5-mini"


async def test_a_refusal_has_its_status_name_and_an_error_type(obs: Observed) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await obs.stub.Chat(
            pb.ChatRequest(
                messages=[user("mail jane.roe@acme-corp.io")],
                preferred_model="cloud",
                labels={"project": "atlas"},
            )
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    (server,) = obs.servers()
    s = attrs(server)
    assert s[t.RPC_RESPONSE_STATUS_CODE] == "PERMISSION_DENIED"
    assert s[t.ERROR_TYPE] == "DATA_RESIDENCY"
    assert s["celgate.label.project"] == "atlas"
    (duration,) = obs.points(t.METRIC_SERVER_CALL_DURATION)
    assert duration.attributes[t.RPC_RESPONSE_STATUS_CODE] == "PERMISSION_DENIED"
    assert duration.attributes[t.ERROR_TYPE] == "DATA_RESIDENCY"
    (line,) = obs.decisions()
    assert line["labels"] == {"project": "atlas"} and line["status"] == "PERMISSION_DENIED"


async def test_opting_in_to_stable_rpc_drops_the_experimental_attributes(
    ollama: FakeOllama, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stable_rpc_only("rpc") and not stable_rpc_only("rpc,rpc/dup")
    assert not stable_rpc_only("") and not stable_rpc_only("http")
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http,rpc")
    ollama.reset()
    config = make_config({"local": ollama_model(ollama.url)}, "local")
    async with observed_gateway(config, tmp_path) as observed:
        await observed.stub.Chat(pb.ChatRequest(messages=[user("hi")]))
        (server,) = observed.servers()
    s = attrs(server)
    assert s[t.RPC_SYSTEM_NAME] == "grpc" and s[t.RPC_RESPONSE_STATUS_CODE] == "OK"
    for old in (t.RPC_SYSTEM, t.RPC_SERVICE, t.RPC_GRPC_STATUS_CODE):
        assert old not in s
