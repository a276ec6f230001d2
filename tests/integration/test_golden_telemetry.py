"""The decision log, the spans and the metric points of a fixed set of requests, compared byte for
byte with a committed snapshot (tests/data/golden/telemetry.json).

The requests go through a real gateway over a real gRPC channel to the upstream fakes: a local
route, a cloud route, a fallback, a dropped fallback, a residency denial, an unknown model, an
invalid request, a budget refusal, a stream, the Route dry run and ListModels. What varies from
run to run is replaced by stable placeholders before the comparison: decision and trace ids by
their order of appearance, times and durations by a marker, the fakes' ports by a name. Every
other byte (attribute names and values, span names, kinds, parents, statuses, metric points and
decision-log fields in their order) must match.

After a deliberate change to what is recorded, regenerate the snapshot with
`CELGATE_GOLDEN_UPDATE=1 .venv/bin/pytest tests/integration/test_golden_telemetry.py` and
review the diff.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest

from gateway.config import Config
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import policy_pb2
from tests.fakes._server import Reply, refused_url
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import make_config, ollama_model, openai_model
from tests.integration.test_telemetry import CLOUD_PRICE, Observed, observed_gateway

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden" / "telemetry.json"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Normalizer:
    """Stable placeholders for what differs between runs."""

    def __init__(self, ports: dict[int, str]) -> None:
        self.ports = ports
        self.ids: dict[str, str] = {}

    def id(self, kind: str, value: str | None) -> str | None:
        if value is None:
            return None
        if value not in self.ids:
            self.ids[value] = f"<{kind}-{sum(v.startswith(f'<{kind}') for v in self.ids.values())}>"
        return self.ids[value]

    def attributes(self, attributes: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in sorted(dict(attributes or {}).items()):
            if key == "celgate.decision_id":
                value = self.id("decision", value)
            elif key == "server.port":
                value = self.ports.get(value, value)
            elif key == "gen_ai.response.time_to_first_chunk":
                value = "<s>"
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out

    def line(self, line: dict[str, Any]) -> dict[str, Any]:
        line = dict(line)
        line["decision_id"] = self.id("decision", line["decision_id"])
        line["trace_id"] = self.id("trace", line["trace_id"])
        line["time"] = "<time>"
        if line.get("policy_inputs"):
            line["policy_inputs"] = {**line["policy_inputs"], "now": "<time>"}
        line["latency_ms"] = "<ms>" if line["latency_ms"] > 0 else line["latency_ms"]
        line["attempts"] = [
            {**a, "duration_ms": "<ms>" if a["duration_ms"] > 0 else a["duration_ms"]}
            for a in line["attempts"]
        ]
        return line


def spans(obs: Observed, norm: Normalizer) -> list[dict[str, Any]]:
    finished = obs.finished()
    index = {span.context.span_id: i for i, span in enumerate(finished)}
    out = []
    for span in finished:
        parent: int | str | None = None
        if span.parent is not None:
            parent = "remote" if span.parent.is_remote else index.get(span.parent.span_id)
        out.append(
            {
                "name": span.name,
                "kind": span.kind.name,
                "trace": norm.id("trace", format(span.context.trace_id, "032x")),
                "parent": parent,
                "status": span.status.status_code.name,
                "status_description": span.status.description,
                "attributes": norm.attributes(span.attributes),
                "events": [event.name for event in span.events],
            }
        )
    obs.spans.clear()
    return out


DURATIONS = frozenset(
    {
        "gen_ai.client.operation.duration",
        "gen_ai.client.operation.time_to_first_chunk",
        "rpc.server.call.duration",
    }
)


def metric_points(obs: Observed, norm: Normalizer) -> list[dict[str, Any]]:
    out = []
    for name, metric in sorted(obs.metrics().items()):
        for point in metric.data.data_points:
            entry: dict[str, Any] = {
                "metric": name,
                "unit": metric.unit,
                "attributes": norm.attributes(point.attributes),
            }
            if hasattr(point, "bucket_counts"):
                entry["count"] = point.count
                if name not in DURATIONS:  # durations vary
                    entry["sum"] = point.sum
                    entry["buckets"] = list(point.bucket_counts)
                    entry["bounds"] = list(point.explicit_bounds)
            else:
                entry["value"] = point.value
            out.append(entry)
    out.sort(key=lambda e: (e["metric"], json.dumps(e["attributes"], sort_keys=True)))
    return out


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=text)


async def call(obs: Observed, norm: Normalizer, name: str, run: Any) -> dict[str, Any]:
    """Run one request, and return what it left in the spans and the decision log."""
    start = len(obs.decisions())
    try:
        await run()
        status = "OK"
    except grpc.aio.AioRpcError as error:
        status = error.code().name
    await obs.settled(1)
    lines = [norm.line(line) for line in obs.decisions()[start:]]
    # The decision log, re-encoded as the gateway writes it (same separators, same key order).
    encoded = [json.dumps(line, separators=(",", ":"), ensure_ascii=False) for line in lines]
    return {"request": name, "status": status, "decision_log": encoded, "spans": spans(obs, norm)}


async def chat_requests(
    obs: Observed, norm: Normalizer, ollama: FakeOllama, cloud: FakeOpenAI
) -> list[dict[str, Any]]:
    stub = obs.stub
    results = []

    ollama.enqueue(Reply(content="Paris.", prompt_tokens=12, completion_tokens=5))
    results.append(
        await call(
            obs,
            norm,
            "local route, caller's trace context",
            lambda: stub.Chat(
                pb.ChatRequest(messages=[user("Capital of France?")]),
                metadata=(("traceparent", TRACEPARENT),),
            ),
        )
    )
    cloud.enqueue(Reply(content="Paris.", prompt_tokens=12, completion_tokens=5))
    results.append(
        await call(
            obs,
            norm,
            "cloud route",
            lambda: stub.Chat(
                pb.ChatRequest(messages=[user("Capital of France?")], preferred_model="cloud")
            ),
        )
    )
    cloud.enqueue(Reply(content="ok", prompt_tokens=3, completion_tokens=1))
    results.append(
        await call(
            obs,
            norm,
            "fallback after a refused connection",
            lambda: stub.Chat(
                pb.ChatRequest(
                    messages=[user("hi")], preferred_model="dead", labels={"fallbacks": "cloud"}
                )
            ),
        )
    )
    ollama.enqueue(Reply(content="fine", prompt_tokens=9, completion_tokens=2))
    results.append(
        await call(
            obs,
            norm,
            "restricted content, the cloud fallback dropped",
            lambda: stub.Chat(
                pb.ChatRequest(
                    messages=[user("Pay 4111 1111 1111 1111 to DE89370400440532013000 today")],
                    labels={"fallbacks": "cloud"},
                )
            ),
        )
    )
    results.append(
        await call(
            obs,
            norm,
            "residency denial",
            lambda: stub.Chat(
                pb.ChatRequest(
                    messages=[user("summarise this")],
                    preferred_model="cloud",
                    classification=policy_pb2.CLASSIFICATION_CONFIDENTIAL,
                )
            ),
        )
    )
    results.append(
        await call(
            obs,
            norm,
            "unknown preferred model",
            lambda: stub.Chat(pb.ChatRequest(messages=[user("hi")], preferred_model="nope")),
        )
    )
    results.append(
        await call(
            obs,
            norm,
            "invalid request",
            lambda: stub.Chat(pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER)])),
        )
    )
    ollama.enqueue(Reply(content="one two three four", prompt_tokens=7, completion_tokens=4))

    async def stream() -> None:
        async for _ in stub.ChatStream(pb.ChatStreamRequest(messages=[user("Count")])):
            pass

    results.append(await call(obs, norm, "stream", stream))
    results.append(
        await call(
            obs,
            norm,
            "route dry run",
            lambda: stub.Route(pb.RouteRequest(messages=[user("hi")], preferred_model="cloud")),
        )
    )
    before = len(obs.finished())
    await stub.ListModels(pb.ListModelsRequest())
    assert len(obs.finished()) == before + 1
    results.append({"request": "list models", "spans": spans(obs, norm)})
    return results


@pytest.fixture
def ports(ollama: FakeOllama, cloud: FakeOpenAI) -> dict[int, str]:
    return {ollama.port: "<ollama-port>", cloud.port: "<openai-port>"}


async def budget_requests(poor: Observed, norm: Normalizer) -> list[dict[str, Any]]:
    return [
        await call(
            poor,
            norm,
            "budget refusal",
            lambda: poor.stub.Chat(pb.ChatRequest(messages=[user("hi")], preferred_model="cloud")),
        )
    ]


@pytest.fixture
async def gateways(
    ollama: FakeOllama, cloud: FakeOpenAI, tmp_path: Path
) -> AsyncIterator[tuple[Observed, Observed, int]]:
    ollama.reset()
    cloud.reset()
    with refused_url("/v1") as dead:
        models = {
            "local": ollama_model(ollama.url),
            "cloud": openai_model(cloud.url, price=CLOUD_PRICE),
            "dead": openai_model(dead),
        }
        poor_config: Config = make_config(
            {k: v for k, v in models.items() if k != "dead"},
            "local",
            budgets=[{"tenant": "*", "limit_usd": 0.0001, "mode": "hard"}],
        )
        (tmp_path / "poor").mkdir()
        async with (
            observed_gateway(make_config(models, "local"), tmp_path) as obs,
            observed_gateway(poor_config, tmp_path / "poor") as poor,
        ):
            yield obs, poor, urlsplit(dead).port or 0


async def test_decision_log_spans_and_metrics_match_the_golden_file(
    gateways: tuple[Observed, Observed, int],
    ollama: FakeOllama,
    cloud: FakeOpenAI,
    ports: dict[int, str],
) -> None:
    obs, poor, dead_port = gateways
    norm = Normalizer({**ports, dead_port: "<refused-port>"})
    snapshot = {
        "requests": await chat_requests(obs, norm, ollama, cloud),
        "metrics": metric_points(obs, norm),
        "budget": {
            "requests": await budget_requests(poor, norm),
            "metrics": metric_points(poor, norm),
        },
    }
    text = json.dumps(snapshot, indent=1, ensure_ascii=False) + "\n"
    if os.environ.get("CELGATE_GOLDEN_UPDATE") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert GOLDEN.exists(), "no golden file: run once with CELGATE_GOLDEN_UPDATE=1"
    expected = GOLDEN.read_text()
    if text != expected:
        # A readable first difference, then the byte comparison.
        for number, (got, want) in enumerate(
            zip(text.splitlines(), expected.splitlines(), strict=False), 1
        ):
            assert got == want, f"line {number} of {GOLDEN.name} differs"
    assert text == expected
