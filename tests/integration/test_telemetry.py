"""Spans, metrics and the decision log of real requests: a real grpc.aio gateway on loopback,
the upstream fakes over real HTTP, and the SDK's in-memory exporters in place of a collector.

Covers the span tree, names and attributes of a local route, a cloud route, a fallback, a
residency denial, a budget refusal and a stream; the caller's trace context; the metrics; and
that no prompt, completion or matched value reaches any of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway import telemetry as t
from gateway.audit import DecisionLog
from gateway.config import Config
from gateway.server import Gateway, running
from gateway.service import DECISION_TRAILER
from gateway.telemetry import Telemetry
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc, policy_pb2
from tests.fakes._server import Reply, refused_url
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import make_config, ollama_model, openai_model

pytestmark = pytest.mark.integration

Stub = gateway_pb2_grpc.GatewayServiceStub
SERVER_CHAT = "gateway.v1.GatewayService/Chat"
SERVER_STREAM = "gateway.v1.GatewayService/ChatStream"
LOCAL_MODEL = "llama3.1:8b"
CLOUD_MODEL = "gpt-5-mini"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@dataclass
class Observed:
    """A gateway whose telemetry goes to memory, and what it recorded."""

    gateway: Gateway
    stub: Stub
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    log_path: Path

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def servers(self) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.kind == SpanKind.SERVER]

    def clients(self) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.kind == SpanKind.CLIENT]

    def decisions(self) -> list[dict[str, Any]]:
        text = self.log_path.read_text() if self.log_path.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    async def settled(self, servers: int) -> None:
        """A stream's SERVER span ends after the caller has the last chunk: wait for it."""
        for _ in range(200):
            if len(self.servers()) >= servers:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"expected {servers} SERVER spans, have {len(self.servers())}")

    def metrics(self) -> dict[str, Metric]:
        data = self.reader.get_metrics_data()
        found: dict[str, Metric] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = metric
        return found

    def points(self, name: str) -> list[Any]:
        metric = self.metrics().get(name)
        return [] if metric is None else list(metric.data.data_points)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def matching(points: Sequence[Any], **wanted: Any) -> list[Any]:
    """Data points whose attributes include `wanted` (dots written as __)."""
    want = {key.replace("__", "."): value for key, value in wanted.items()}
    return [p for p in points if all(p.attributes.get(k) == v for k, v in want.items())]


def catalogue(ollama: FakeOllama, cloud: FakeOpenAI, dead: str) -> dict[str, dict[str, Any]]:
    return {
        "local": ollama_model(ollama.url),
        "cloud": openai_model(cloud.url),
        "dead": openai_model(dead),
    }


@asynccontextmanager
async def observed_gateway(config: Config, tmp_path: Path) -> AsyncIterator[Observed]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    log_path = tmp_path / "decisions.jsonl"
    telemetry = Telemetry(
        config.models,
        tracer_provider=tracer_provider,
        meter_provider=MeterProvider(metric_readers=[reader]),
        decision_log=DecisionLog.open(str(log_path)),
    )
    async with (
        running(config, telemetry) as gateway,
        grpc.aio.insecure_channel(gateway.address) as channel,
    ):
        yield Observed(gateway, Stub(channel), spans, reader, log_path)


CLOUD_PRICE = {"input_per_mtok": 2.0, "output_per_mtok": 8.0}


@pytest.fixture
async def obs(ollama: FakeOllama, cloud: FakeOpenAI, tmp_path: Path) -> AsyncIterator[Observed]:
    ollama.reset()
    cloud.reset()
    with refused_url("/v1") as dead:
        models = {
            "local": ollama_model(ollama.url),
            "cloud": openai_model(cloud.url, price=CLOUD_PRICE),
            "dead": openai_model(dead),
        }
        async with observed_gateway(make_config(models, "local"), tmp_path) as observed:
            yield observed


@pytest.fixture
async def poor(ollama: FakeOllama, cloud: FakeOpenAI, tmp_path: Path) -> AsyncIterator[Observed]:
    """A gateway whose hard budget cannot cover one cloud call."""
    ollama.reset()
    cloud.reset()
    models = {
        "local": ollama_model(ollama.url),
        "cloud": openai_model(cloud.url, price=CLOUD_PRICE),
    }
    budgets = [{"tenant": "*", "limit_usd": 0.0001, "mode": "hard"}]
    config = make_config(models, "local", budgets=budgets)
    async with observed_gateway(config, tmp_path) as observed:
        yield observed


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=text)


def decision_attributes_match(span: ReadableSpan, route: pb.RouteInfo) -> None:
    a = attrs(span)
    assert a[t.CELGATE_TENANT] == "default"
    assert a[t.CELGATE_POLICY_NAME] == route.policy_name == "preferred"
    assert a[t.CELGATE_POLICY_REVISION] == route.policy_revision
    assert a[t.CELGATE_POLICY_RULE] == route.rule
    assert route.rule.startswith("preferred/")  # the policy's id and the match's position
    assert a[t.CELGATE_CLASSIFICATION] == "PUBLIC"
    assert a[t.CELGATE_DETECTORS] == ()
    assert isinstance(a[t.CELGATE_TASK_TYPE], str) and a[t.CELGATE_TASK_TYPE]
    assert 0.0 <= a[t.CELGATE_COMPLEXITY] <= 1.0
    assert a[t.CELGATE_ENFORCEMENT] == "allowed"


async def test_local_route_span_tree_and_attributes(obs: Observed, ollama: FakeOllama) -> None:
    ollama.enqueue(Reply(content="Paris.", prompt_tokens=12, completion_tokens=5))
    call = obs.stub.Chat(pb.ChatRequest(messages=[user("Capital of France?")]))
    reply = await call
    trailers = dict(await call.trailing_metadata() or ())

    (server,) = obs.servers()
    (client,) = obs.clients()
    assert server.name == SERVER_CHAT
    assert client.name == f"chat {LOCAL_MODEL}"
    # One trace, the CLIENT span under the SERVER span.
    assert client.context.trace_id == server.context.trace_id
    assert client.parent is not None and client.parent.span_id == server.context.span_id
    assert server.parent is None

    c = attrs(client)
    assert c[t.GEN_AI_OPERATION_NAME] == "chat"
    assert c[t.GEN_AI_PROVIDER_NAME] == "ollama"
    assert c[t.GEN_AI_REQUEST_MODEL] == LOCAL_MODEL
    assert c[t.GEN_AI_RESPONSE_MODEL] == LOCAL_MODEL
    assert (c[t.GEN_AI_USAGE_INPUT_TOKENS], c[t.GEN_AI_USAGE_OUTPUT_TOKENS]) == (12, 5)
    assert c[t.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert c[t.SERVER_ADDRESS] == "127.0.0.1"
    assert c[t.SERVER_PORT] == ollama.port
    assert c[t.GEN_AI_USAGE_COST] == 0.0 and c[t.CELGATE_COST_CURRENCY] == "USD"
    assert c[t.GEN_AI_OUTPUT_TYPE] == "text"
    assert c[t.CELGATE_REQUEST_STOP_SEQUENCES] == 0
    assert t.GEN_AI_RESPONSE_ID not in c  # Ollama sends no completion id
    assert t.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK not in c  # not a stream
    assert c[t.CELGATE_LOCATION] == "on_prem"
    assert c[t.CELGATE_MODEL] == "local"
    assert c[t.CELGATE_FALLBACK_ATTEMPT] == 1
    assert t.ERROR_TYPE not in c
    assert client.status.status_code == StatusCode.UNSET
    decision_attributes_match(client, reply.route)

    s = attrs(server)
    # The stable RPC attributes, and the experimental ones they replace beside them.
    assert s[t.RPC_SYSTEM_NAME] == "grpc" and s[t.RPC_METHOD] == SERVER_CHAT
    assert s[t.RPC_RESPONSE_STATUS_CODE] == "OK"
    assert s[t.RPC_SYSTEM] == "grpc" and s[t.RPC_SERVICE] == "gateway.v1.GatewayService"
    assert s[t.RPC_GRPC_STATUS_CODE] == 0
    assert s[t.CELGATE_DECISION_ID] == reply.route.decision_id
    assert s[t.CELGATE_MODEL] == "local" and s[t.CELGATE_LOCATION] == "on_prem"
    decision_attributes_match(server, reply.route)

    # The decision id reaches the caller twice and keys the decision-log line.
    assert trailers[DECISION_TRAILER] == reply.route.decision_id
    (line,) = obs.decisions()
    assert line["decision_id"] == reply.route.decision_id
    assert line["trace_id"] == format(server.context.trace_id, "032x")
    assert line["rpc"] == "Chat" and line["status"] == "OK" and line["reason"] is None
    assert line["tenant"] == "default" and line["classification"] == "PUBLIC"
    assert (line["policy_name"], line["rule"]) == ("preferred", reply.route.rule)
    assert line["policy_revision"] == reply.route.policy_revision
    assert line["candidates"] == [{"model": "local", "allowed": True, "reason": None}]
    assert line["model"] == "local" and line["enforcement"] == "allowed"
    assert [(a["model"], a["error"]) for a in line["attempts"]] == [("local", None)]
    assert line["cost_usd"] == 0.0 and line["latency_ms"] > 0


async def test_cloud_route_carries_the_cost(obs: Observed, cloud: FakeOpenAI) -> None:
    cloud.enqueue(Reply(content="Paris.", prompt_tokens=12, completion_tokens=5))
    reply = await obs.stub.Chat(
        pb.ChatRequest(messages=[user("Capital of France?")], preferred_model="cloud")
    )
    expected = (12 * 2.0 + 5 * 8.0) / 1e6
    assert reply.route.cost_usd == pytest.approx(expected)
    (server,) = obs.servers()
    (client,) = obs.clients()
    c = attrs(client)
    assert client.name == f"chat {CLOUD_MODEL}"
    assert c[t.GEN_AI_PROVIDER_NAME] == "openai"
    assert c[t.SERVER_PORT] == cloud.port
    assert c[t.CELGATE_LOCATION] == "cloud"
    assert c[t.GEN_AI_USAGE_COST] == pytest.approx(expected)
    assert c[t.CELGATE_COST_CURRENCY] == "USD"
    assert c[t.GEN_AI_RESPONSE_ID].startswith("chatcmpl-")
    # The request's total is on the SERVER span under its own name: summing gen_ai.usage.cost
    # over every span of the trace counts the call once.
    s = attrs(server)
    assert t.GEN_AI_USAGE_COST not in s
    assert s[t.CELGATE_COST_TOTAL] == pytest.approx(expected)
    assert s[t.CELGATE_COST_CURRENCY] == "USD"
    spans = obs.finished()
    assert sum(attrs(x).get(t.GEN_AI_USAGE_COST, 0.0) for x in spans) == pytest.approx(expected)
    assert obs.decisions()[0]["cost_usd"] == pytest.approx(expected)

    (cost,) = obs.points(t.METRIC_COST)
    assert cost.value == pytest.approx(expected)
    assert cost.attributes == {
        t.CELGATE_TENANT: "default",
        t.CELGATE_TASK_TYPE: c[t.CELGATE_TASK_TYPE],
        t.CELGATE_MODEL: "cloud",
        t.GEN_AI_REQUEST_MODEL: CLOUD_MODEL,
        t.CELGATE_LOCATION: "cloud",
    }


async def test_fallback_has_two_client_spans_the_first_failed(
    obs: Observed, cloud: FakeOpenAI
) -> None:
    cloud.enqueue(Reply(content="ok", prompt_tokens=3, completion_tokens=1))
    reply = await obs.stub.Chat(
        pb.ChatRequest(messages=[user("hi")], preferred_model="dead", labels={"fallbacks": "cloud"})
    )
    assert reply.route.model == "cloud" and reply.route.attempts == 2
    (server,) = obs.servers()
    first, second = sorted(obs.clients(), key=lambda s: s.start_time or 0)
    for span in (first, second):
        assert span.parent is not None and span.parent.span_id == server.context.span_id
    f, g = attrs(first), attrs(second)
    assert f[t.CELGATE_MODEL] == "dead" and f[t.CELGATE_FALLBACK_ATTEMPT] == 1
    assert f[t.ERROR_TYPE] == "connect"
    assert first.status.status_code == StatusCode.ERROR
    assert t.GEN_AI_USAGE_COST not in f and t.GEN_AI_USAGE_INPUT_TOKENS not in f
    assert g[t.CELGATE_MODEL] == "cloud" and g[t.CELGATE_FALLBACK_ATTEMPT] == 2
    assert t.ERROR_TYPE not in g and g[t.GEN_AI_USAGE_COST] > 0
    s = attrs(server)
    assert s[t.CELGATE_FALLBACK_ATTEMPT] == 2 and s[t.CELGATE_MODEL] == "cloud"
    assert t.ERROR_TYPE not in s

    (line,) = obs.decisions()
    assert [(a["model"], a["error"]) for a in line["attempts"]] == [
        ("dead", "connect"),
        ("cloud", None),
    ]
    durations = obs.points(t.METRIC_OPERATION_DURATION)
    (failed,) = matching(durations, error__type="connect")
    assert failed.count == 1 and failed.attributes[t.GEN_AI_REQUEST_MODEL] == CLOUD_MODEL
    assert len(matching(durations, gen_ai__response__model=CLOUD_MODEL)) == 1


async def test_residency_denial_is_on_the_server_span(obs: Observed, cloud: FakeOpenAI) -> None:
    request = pb.ChatRequest(
        messages=[user("summarise this")],
        preferred_model="cloud",
        classification=policy_pb2.CLASSIFICATION_CONFIDENTIAL,
    )
    call = obs.stub.Chat(request)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    trailers = dict(info.value.trailing_metadata() or ())
    assert cloud.request_count == 0
    assert obs.clients() == []
    (server,) = obs.servers()
    s = attrs(server)
    assert s[t.ERROR_TYPE] == "DATA_RESIDENCY"
    assert s[t.RPC_GRPC_STATUS_CODE] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert s[t.CELGATE_ENFORCEMENT] == "denied"
    assert s[t.CELGATE_CLASSIFICATION] == "CONFIDENTIAL"
    assert s[t.CELGATE_POLICY_RULE] == "preferred/1"  # the preferred_model match
    assert s[t.CELGATE_DECISION_ID] == trailers[DECISION_TRAILER]

    (line,) = obs.decisions()
    assert line["decision_id"] == trailers[DECISION_TRAILER]
    assert line["status"] == "PERMISSION_DENIED" and line["reason"] == "DATA_RESIDENCY"
    assert line["enforcement"] == "denied" and line["model"] is None
    assert line["declared_classification"] == "CONFIDENTIAL"
    (candidate,) = line["candidates"]
    assert candidate["model"] == "cloud" and candidate["allowed"] is False
    assert "INTERNAL" in candidate["reason"] and "CONFIDENTIAL" in candidate["reason"]

    (blocked,) = obs.points(t.METRIC_ENFORCEMENT_BLOCKED)
    assert blocked.value == 1
    assert blocked.attributes[t.CELGATE_MODEL] == "cloud"
    assert blocked.attributes[t.CELGATE_ENFORCEMENT_REASON] == "DATA_RESIDENCY"
    (decision,) = obs.points(t.METRIC_DECISIONS)
    assert decision.attributes[t.CELGATE_OUTCOME] == "data_residency"


async def test_dropped_fallback_is_counted_and_explained(obs: Observed) -> None:
    await obs.stub.Chat(
        pb.ChatRequest(
            messages=[user("hi")],
            classification=policy_pb2.CLASSIFICATION_CONFIDENTIAL,
            labels={"fallbacks": "cloud"},
        )
    )
    (line,) = obs.decisions()
    assert [(c["model"], c["allowed"]) for c in line["candidates"]] == [
        ("local", True),
        ("cloud", False),
    ]
    assert line["enforcement"] == "allowed"
    (blocked,) = obs.points(t.METRIC_ENFORCEMENT_BLOCKED)
    assert blocked.attributes[t.CELGATE_MODEL] == "cloud"
    assert blocked.attributes[t.CELGATE_ENFORCEMENT] == "allowed"


async def test_budget_refusal_is_on_the_server_span(poor: Observed, cloud: FakeOpenAI) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await poor.stub.Chat(pb.ChatRequest(messages=[user("hi")], preferred_model="cloud"))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert cloud.request_count == 0
    assert poor.clients() == []  # no upstream call, so no CLIENT span
    (server,) = poor.servers()
    s = attrs(server)
    assert s[t.ERROR_TYPE] == "BUDGET_EXHAUSTED"
    assert s[t.RPC_GRPC_STATUS_CODE] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert s[t.CELGATE_ENFORCEMENT] == "allowed"  # enforcement let it through; budget did not
    (line,) = poor.decisions()
    assert line["status"] == "RESOURCE_EXHAUSTED" and line["reason"] == "BUDGET_EXHAUSTED"
    assert [(a["model"], a["error"]) for a in line["attempts"]] == [("cloud", "budget")]
    (decision,) = poor.points(t.METRIC_DECISIONS)
    assert decision.attributes[t.CELGATE_OUTCOME] == "budget_exhausted"
    (utilization,) = poor.points(t.METRIC_BUDGET_UTILIZATION)
    assert utilization.attributes == {t.CELGATE_TENANT: "default"}
    assert utilization.value == 0.0


async def test_stream_span_ends_with_the_stream_and_carries_usage(
    obs: Observed, ollama: FakeOllama
) -> None:
    ollama.enqueue(Reply(content="one two three four", prompt_tokens=7, completion_tokens=4))
    parts = [
        part async for part in obs.stub.ChatStream(pb.ChatStreamRequest(messages=[user("Count")]))
    ]
    await obs.settled(1)
    (server,) = obs.servers()
    (client,) = obs.clients()
    assert server.name == SERVER_STREAM
    assert client.parent is not None and client.parent.span_id == server.context.span_id
    c = attrs(client)
    assert (c[t.GEN_AI_USAGE_INPUT_TOKENS], c[t.GEN_AI_USAGE_OUTPUT_TOKENS]) == (7, 4)
    assert c[t.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert c[t.GEN_AI_RESPONSE_MODEL] == LOCAL_MODEL
    assert server.end_time is not None and client.end_time is not None
    assert client.end_time <= server.end_time
    assert attrs(server)[t.CELGATE_DECISION_ID] == parts[-1].route.decision_id
    (line,) = obs.decisions()
    assert line["rpc"] == "ChatStream" and line["status"] == "OK" and line["model"] == "local"


async def test_abandoned_stream_ends_its_spans_as_cancelled(
    obs: Observed, ollama: FakeOllama
) -> None:
    ollama.set_latency(between_chunks=0.2)
    ollama.enqueue(Reply(content=" ".join(f"w{i}" for i in range(20))))
    call = obs.stub.ChatStream(pb.ChatStreamRequest(messages=[user("Count")]))
    await call.read()
    call.cancel()
    await obs.settled(1)
    (server,) = obs.servers()
    (client,) = obs.clients()
    assert attrs(server)[t.RPC_GRPC_STATUS_CODE] == grpc.StatusCode.CANCELLED.value[0]
    assert attrs(client)[t.ERROR_TYPE] == "cancelled"
    (line,) = obs.decisions()
    assert line["status"] == "CANCELLED"
    assert [(a["model"], a["error"]) for a in line["attempts"]] == [("local", "cancelled")]


async def test_callers_trace_context_is_continued(obs: Observed) -> None:
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    await obs.stub.Chat(
        pb.ChatRequest(messages=[user("hi")]), metadata=(("traceparent", traceparent),)
    )
    (server,) = obs.servers()
    (client,) = obs.clients()
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    assert format(client.context.trace_id, "032x") == CALLER_TRACE
    assert server.parent is not None and format(server.parent.span_id, "016x") == CALLER_SPAN
    assert server.parent.is_remote
    assert obs.decisions()[0]["trace_id"] == CALLER_TRACE


async def test_route_dry_run_is_logged_without_a_model_call(obs: Observed) -> None:
    response = await obs.stub.Route(pb.RouteRequest(messages=[user("hi")]))
    assert obs.clients() == []
    (server,) = obs.servers()
    assert attrs(server)[t.CELGATE_MODEL] == "local"
    (line,) = obs.decisions()
    assert line["rpc"] == "Route" and line["decision_id"] == response.route.decision_id
    assert line["model"] is None and line["attempts"] == []


async def test_metrics_names_buckets_and_sums(
    obs: Observed, ollama: FakeOllama, cloud: FakeOpenAI
) -> None:
    ollama.enqueue(Reply(content="a", prompt_tokens=10, completion_tokens=2))
    cloud.enqueue(
        Reply(content="b", prompt_tokens=100, completion_tokens=20),
        Reply(content="c", prompt_tokens=50, completion_tokens=10),
    )
    costs = []
    for model in ("local", "cloud", "cloud"):
        reply = await obs.stub.Chat(pb.ChatRequest(messages=[user("hi")], preferred_model=model))
        costs.append(reply.route.cost_usd)
    found = obs.metrics()

    tokens = found[t.METRIC_TOKEN_USAGE]
    assert tokens.unit == "{token}"
    points: list[HistogramDataPoint] = list(tokens.data.data_points)  # type: ignore[arg-type]
    assert all(tuple(p.explicit_bounds) == tuple(t.TOKEN_USAGE_BUCKETS) for p in points)
    (cloud_in,) = matching(points, gen_ai__request__model=CLOUD_MODEL, gen_ai__token__type="input")
    assert (cloud_in.count, cloud_in.sum) == (2, 150)
    (local_out,) = matching(
        points, gen_ai__request__model=LOCAL_MODEL, gen_ai__token__type="output"
    )
    assert (local_out.count, local_out.sum) == (1, 2)
    assert local_out.attributes[t.GEN_AI_PROVIDER_NAME] == "ollama"
    assert local_out.attributes[t.GEN_AI_OPERATION_NAME] == "chat"
    assert local_out.attributes[t.SERVER_PORT] == ollama.port

    duration = found[t.METRIC_OPERATION_DURATION]
    assert duration.unit == "s"
    durations: list[HistogramDataPoint] = list(duration.data.data_points)  # type: ignore[arg-type]
    assert durations
    assert all(tuple(p.explicit_bounds) == tuple(t.OPERATION_DURATION_BUCKETS) for p in durations)

    cost_points: list[NumberDataPoint] = list(found[t.METRIC_COST].data.data_points)  # type: ignore[arg-type]
    assert found[t.METRIC_COST].unit == "USD"
    (cloud_cost,) = matching(cost_points, celgate__model="cloud")
    assert cloud_cost.value == pytest.approx(costs[1] + costs[2])
    (local_cost,) = matching(cost_points, celgate__model="local")
    assert local_cost.value == 0.0

    (decisions,) = obs.points(t.METRIC_DECISIONS)
    assert decisions.value == 3
    assert decisions.attributes == {
        t.CELGATE_POLICY_RULE: "preferred/1",
        t.CELGATE_OUTCOME: "allowed",
        t.RPC_METHOD: SERVER_CHAT,
    }


# -- invariant 4 ---------------------------------------------------------------------------

SECRETS = (
    "jane.doe@example.com",
    "4111 1111 1111 1111",
    "AKIA2E0A8F3B244C9986",
    "BLUEBIRD",
    "launch the rocket at dawn",
)
COMPLETION = "the-answer-canary-5f1e9a"


async def test_no_content_reaches_spans_metrics_logs_or_the_decision_log(
    ollama: FakeOllama,
    cloud: FakeOpenAI,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ollama.reset()
    cloud.reset()
    caplog.set_level(logging.DEBUG)
    prompt = (
        f"Mail {SECRETS[0]} the card {SECRETS[1]} and key {SECRETS[2]} for project "
        f"{SECRETS[3]}: {SECRETS[4]}."
    )
    models = {
        "local": ollama_model(ollama.url),
        "cloud": openai_model(cloud.url, price=CLOUD_PRICE),
    }
    dictionaries = [{"id": "org.codename", "level": "CONFIDENTIAL", "terms": ["BLUEBIRD"]}]
    config = make_config(models, "local", inspection={"dictionaries": dictionaries})
    async with observed_gateway(config, tmp_path) as observed:
        ollama.enqueue(Reply(content=COMPLETION), Reply(content=f"{COMPLETION} streamed"))
        reply = await observed.stub.Chat(pb.ChatRequest(messages=[user(prompt)]))
        assert reply.content == COMPLETION and reply.route.classification == 4  # RESTRICTED
        parts = [
            p
            async for p in observed.stub.ChatStream(
                pb.ChatStreamRequest(messages=[user(prompt)], preferred_model="local")
            )
        ]
        assert COMPLETION in "".join(p.content_delta for p in parts)
        # Residency denial: the content must not ride out on the refusal either.
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await observed.stub.Chat(
                pb.ChatRequest(messages=[user(prompt)], preferred_model="cloud")
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # An upstream error whose text quotes the prompt.
        ollama.fail_next(500, message=f"upstream echoes: {prompt}")
        with pytest.raises(grpc.aio.AioRpcError):
            await observed.stub.Chat(pb.ChatRequest(messages=[user(prompt)]))
        await observed.settled(4)
        exported = [span.to_json() for span in observed.finished()]
        metrics = observed.reader.get_metrics_data()
        assert metrics is not None
        metrics_text = metrics.to_json()
        lines = observed.log_path.read_text()

    assert len(exported) >= 7 and t.METRIC_COST in metrics_text
    detectors = json.loads(lines.splitlines()[0])["detectors"]
    assert {"fin.payment_card", "secret.aws_access_key", "dict.org.codename"} <= set(detectors)
    logs = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    for text, where in [
        ("\n".join(exported), "spans"),
        (metrics_text, "metrics"),
        (lines, "decision log"),
        (logs, "log records"),
    ]:
        for secret in (*SECRETS, COMPLETION, prompt):
            assert secret not in text, f"{secret!r} leaked into the {where}"
