"""GET /metrics on a real gateway: `celgate serve` as a child process with
`telemetry.prometheus.listen`, real Chat calls over gRPC to the upstream fakes, then a scrape
over HTTP parsed by the Prometheus client's own parser.

What a cluster without an OpenTelemetry collector sees: cost and tokens by tenant, model and
promoted request label; an unpromoted label, an overflowing value or a value carrying content
creates no series; and every metric and label the shipped Grafana dashboard queries is really
exported, so the dashboard cannot drift from the gateway.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.fakes._server import Reply, refused_url
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import GatewayProcess, config_data, free_port, ollama_model, openai_model
from tests.unit.test_dashboard import PROMOTED_LABEL, selectors

pytestmark = pytest.mark.integration

KEYS = {"alpha": "ck-alpha-0123456789", "beta": "ck-beta-9876543210"}
CLOUD_PRICE = {"input_per_mtok": 2.0, "output_per_mtok": 8.0}
SECRET_LABEL = "jane.roe@acme-corp.io"


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def scrape(port: int) -> tuple[str, list[Sample]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = [
        Sample(s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]
    return text, samples


def find(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    return [
        s
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


@dataclass
class Scraped:
    text: str
    samples: list[Sample]
    costs: dict[tuple[str, str, str], float]  # (tenant, model, project) -> USD from RouteInfo
    decisions: list[dict[str, Any]]
    grpc_port: int
    metrics_port: int


def chat(
    stub: gateway_pb2_grpc.GatewayServiceStub,
    tenant: str,
    content: str,
    model: str = "",
    **labels: str,
) -> pb.ChatResponse:
    response: pb.ChatResponse = stub.Chat(
        pb.ChatRequest(
            messages=[pb.Message(role=pb.ROLE_USER, content=content)],
            preferred_model=model,
            labels=labels,
        ),
        metadata=[("authorization", f"Bearer {KEYS[tenant]}")],
        timeout=10,
    )
    return response


@pytest.fixture(scope="module")
def scraped(
    tmp_path_factory: pytest.TempPathFactory, ollama: FakeOllama, cloud: FakeOpenAI
) -> Iterator[Scraped]:
    tmp = tmp_path_factory.mktemp("prometheus")
    ollama.reset()
    cloud.reset()
    metrics_port = free_port()
    log = tmp / "decisions.jsonl"
    with refused_url() as dead:
        data = config_data(
            {
                "local": ollama_model(ollama.url),
                "cloud": openai_model(cloud.url, price=CLOUD_PRICE),
                "dead": openai_model(dead, price=CLOUD_PRICE),
            },
            "local",
            auth={
                "mode": "api_key",
                "api_keys": [
                    {"tenant": t, "sha256": hashlib.sha256(k.encode()).hexdigest()}
                    for t, k in KEYS.items()
                ],
            },
            budgets=[{"tenant": "*", "window": "day", "limit_usd": 100.0}],
            audit={"decision_log": str(log)},
            telemetry={
                "prometheus": {"listen": f"127.0.0.1:{metrics_port}"},
                "labels": {"promote": [PROMOTED_LABEL], "max_values": 2},
            },
        )
        # Traces go to a dead collector with a tiny queue: spans are dropped and counted, so the
        # dashboard's lost-telemetry panel has a series to find.
        env = {name: "" for name in os.environ if name.startswith("OTEL_")}
        env.update(
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=dead,
            OTEL_EXPORTER_OTLP_TRACES_TIMEOUT="1",
            OTEL_BSP_MAX_QUEUE_SIZE="2",
            OTEL_BSP_SCHEDULE_DELAY="50",
        )
        cloud.enqueue(
            Reply(content="a", prompt_tokens=100, completion_tokens=20),
            Reply(content="b", prompt_tokens=50, completion_tokens=10),
            Reply(content="c", prompt_tokens=30, completion_tokens=5),
            Reply(content="d", prompt_tokens=7, completion_tokens=3),
            Reply(content="e", prompt_tokens=9, completion_tokens=2),
        )
        costs: dict[tuple[str, str, str], float] = {}
        gateway = GatewayProcess(data, tmp, env)
        # A generous start-up bound: CI machines are shared and the child imports a lot.
        try:
            gateway.start(timeout=60)
            with grpc.insecure_channel(gateway.address) as channel:
                stub = gateway_pb2_grpc.GatewayServiceStub(channel)
                plan = [
                    ("alpha", "cloud", {PROMOTED_LABEL: "atlas", "team": "core"}),
                    ("alpha", "cloud", {PROMOTED_LABEL: "atlas"}),
                    ("beta", "cloud", {PROMOTED_LABEL: "borealis"}),
                    ("beta", "cloud", {PROMOTED_LABEL: "cygnus"}),  # over the cap of two
                    ("beta", "cloud", {PROMOTED_LABEL: SECRET_LABEL}),  # content: never a series
                    ("alpha", "local", {}),
                ]
                for tenant, model, labels in plan:
                    reply = chat(stub, tenant, "Say hi", model, **labels)
                    key = (tenant, reply.route.model, labels.get(PROMOTED_LABEL, ""))
                    costs[key] = costs.get(key, 0.0) + reply.route.cost_usd
                # A fallback: the dead model fails, the local one answers.
                reply = chat(stub, "alpha", "Say hi", "dead", fallbacks="local")
                assert reply.route.model == "local"
                # A residency refusal: an e-mail address may not go to the cloud model.
                with pytest.raises(grpc.RpcError) as refused:
                    chat(stub, "beta", f"Write to {SECRET_LABEL}", "cloud")
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            text, samples = scrape(metrics_port)
            yield Scraped(
                text,
                samples,
                costs,
                [json.loads(line) for line in log.read_text().splitlines()],
                gateway.port,
                metrics_port,
            )
        finally:
            gateway.__exit__(None, None, None)


def test_cost_by_tenant_model_and_promoted_label(scraped: Scraped) -> None:
    name = "celgate_cost_USD_total"
    (atlas,) = find(scraped.samples, name, celgate_tenant="alpha", celgate_model="cloud")
    assert atlas.labels[f"celgate_label_{PROMOTED_LABEL}"] == "atlas"
    assert atlas.labels["gen_ai_request_model"] == "gpt-5-mini"
    assert atlas.value == pytest.approx(scraped.costs[("alpha", "cloud", "atlas")])
    assert atlas.value > 0
    (borealis,) = find(scraped.samples, name, celgate_label_project="borealis")
    assert borealis.value == pytest.approx(scraped.costs[("beta", "cloud", "borealis")])
    # The third distinct value and the value carrying an address both count as `other`.
    (other,) = find(scraped.samples, name, celgate_label_project="other")
    assert other.value == pytest.approx(
        scraped.costs[("beta", "cloud", "cygnus")] + scraped.costs[("beta", "cloud", SECRET_LABEL)]
    )
    # A call without the label carries none (an empty value, which Prometheus treats as absent).
    local = find(scraped.samples, name, celgate_tenant="alpha", celgate_model="local")
    assert local and all(s.labels.get(f"celgate_label_{PROMOTED_LABEL}", "") == "" for s in local)


def test_tokens_by_tenant_model_and_promoted_label(scraped: Scraped) -> None:
    inputs = find(
        scraped.samples,
        "gen_ai_client_token_usage_sum",
        celgate_tenant="alpha",
        gen_ai_request_model="gpt-5-mini",
        gen_ai_token_type="input",
        celgate_label_project="atlas",
    )
    assert [s.value for s in inputs] == [150.0]
    outputs = find(
        scraped.samples,
        "gen_ai_client_token_usage_sum",
        celgate_tenant="beta",
        gen_ai_token_type="output",
        celgate_label_project="other",
    )
    assert [s.value for s in outputs] == [5.0]  # 3 + 2: the third value and the address


def test_unpromoted_and_overflowing_labels_create_no_series(scraped: Scraped) -> None:
    label_names = {name for s in scraped.samples for name in s.labels}
    assert "celgate_label_team" not in label_names
    assert "celgate_label_fallbacks" not in label_names
    values = {
        s.labels[f"celgate_label_{PROMOTED_LABEL}"]
        for s in scraped.samples
        if s.labels.get(f"celgate_label_{PROMOTED_LABEL}")
    }
    assert values == {"atlas", "borealis", "other"}
    assert "cygnus" not in scraped.text
    assert "jane.roe" not in scraped.text and "acme-corp" not in scraped.text


def test_the_decision_log_carries_the_promoted_labels(scraped: Scraped) -> None:
    labelled = [d.get("labels") for d in scraped.decisions]
    assert labelled[:5] == [
        {PROMOTED_LABEL: "atlas"},
        {PROMOTED_LABEL: "atlas"},
        {PROMOTED_LABEL: "borealis"},
        {PROMOTED_LABEL: "other"},
        {PROMOTED_LABEL: "other"},
    ]
    assert labelled[5] == {}
    assert "jane.roe" not in json.dumps(scraped.decisions)


def test_server_call_duration_and_refusals_are_exported(scraped: Scraped) -> None:
    chat_calls = find(
        scraped.samples,
        "rpc_server_call_duration_seconds_count",
        rpc_method="gateway.v1.GatewayService/Chat",
        rpc_system_name="grpc",
    )
    by_status = {s.labels["rpc_response_status_code"]: s.value for s in chat_calls}
    assert by_status == {"OK": 7.0, "PERMISSION_DENIED": 1.0}
    (denied,) = find(scraped.samples, "celgate_decisions_total", celgate_outcome="data_residency")
    assert denied.value == 1.0
    failed = find(
        scraped.samples, "gen_ai_client_operation_duration_seconds_count", error_type="connect"
    )
    assert [s.value for s in failed] == [1.0]


def test_every_metric_and_label_the_dashboard_queries_is_exported(scraped: Scraped) -> None:
    exported: dict[str, set[str]] = {}
    for sample in scraped.samples:
        exported.setdefault(sample.name, set()).update(sample.labels)
    for selector in selectors():
        assert selector.metric in exported, f"the dashboard queries {selector.metric}"
        missing = selector.labels - exported[selector.metric]
        assert not missing, f"{selector.metric} has no label {sorted(missing)}"


def test_metrics_are_on_their_own_port_only(scraped: Scraped) -> None:
    assert scraped.metrics_port != scraped.grpc_port
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{scraped.metrics_port}/", timeout=5)
    assert missing.value.code == 404
