"""Personal data in free text stays local under the bundled policy: the real gateway over
real gRPC, the bundled routing policy, the cloud models pointed at a recording OpenAI-compatible
fake and the local model at a fake Ollama; every test counts what reached the cloud.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from gateway.server import Gateway
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc, policy_pb2
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import (
    ROOT,
    TEST_POLICY,
    make_config,
    ollama_model,
    openai_model,
    serve,
    status_detail,
)

pytestmark = pytest.mark.integration

Stub = gateway_pb2_grpc.GatewayServiceStub
BUNDLED_POLICY = ROOT / "policies" / "routing"
CLOUD_MODELS = ("claude-opus", "gpt-5.5", "deepseek-chat", "gpt-5-mini")

EXAMPLE = (
    "Patient Maria Gonzalez, born 2/7/1961, lives at 41 Birch Lane, Springfield; diagnosed "
    "with type 2 diabetes, summarize her chart"
)
# One prompt per type; each would go to a cloud model by the bundled policy's task rules.
PERSONAL: dict[str, str] = {
    "example": EXAMPLE,
    "date_of_birth": "Write a short welcome note for Daniel Whitfield, born 14 March 1978.",
    "street_address": "Draft a delivery notice for Priya Raman, 221 Elm Street Apt. 4, Denver.",
    "health": "Rewrite this kindly: my mother was diagnosed with breast cancer last year.",
    "record_number": "Summarize the lab results for MRN: A1234567 in two sentences.",
    "json_record": 'Summarize: {"name": "Aiko Tanaka", "dob": "1984-11-02", "city": "Osaka"}',
    "csv_rows": "Dedupe:\nname,dob,city\nLena Vogt,1990-01-02,Bonn\nOle Berg,1988-05-06,Oslo",
}
PUBLIC_FIGURE = "Summarize in two sentences what Ada Lovelace wrote about the Analytical Engine."


@pytest.fixture(autouse=True)
def _fresh(ollama: FakeOllama, cloud: FakeOpenAI) -> None:
    ollama.reset()
    cloud.reset()


def catalogue(ollama: FakeOllama, cloud: FakeOpenAI) -> dict[str, dict[str, Any]]:
    models = {"llama-local": ollama_model(ollama.url)}
    models.update({alias: openai_model(cloud.url) for alias in CLOUD_MODELS})
    return models


@pytest.fixture(scope="module")
def decision_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("personal") / "decisions.jsonl"


def bundled(ollama: FakeOllama, cloud: FakeOpenAI, log: Path, **inspection: Any) -> Any:
    return make_config(
        catalogue(ollama, cloud),
        "llama-local",
        policy={"dir": str(BUNDLED_POLICY), "watch": False},
        audit={"decision_log": str(log)},
        inspection=inspection,
    )


@pytest.fixture
async def gateway(
    ollama: FakeOllama, cloud: FakeOpenAI, decision_log: Path
) -> AsyncIterator[tuple[Gateway, Stub]]:
    async with serve(bundled(ollama, cloud, decision_log)) as pair:
        yield pair


def user(text: str) -> list[pb.Message]:
    return [pb.Message(role=pb.ROLE_USER, content=text)]


def cloud_saw(cloud: FakeOpenAI, value: str) -> int:
    return sum(value in json.dumps(body) for body in cloud.bodies)


@pytest.mark.parametrize("case", sorted(PERSONAL))
async def test_personal_data_stays_local_over_chat(
    gateway: tuple[Gateway, Stub], ollama: FakeOllama, cloud: FakeOpenAI, case: str
) -> None:
    _, stub = gateway
    reply = await stub.Chat(pb.ChatRequest(messages=user(PERSONAL[case])))
    assert reply.route.model == "llama-local"
    assert reply.route.classification == policy_pb2.CLASSIFICATION_CONFIDENTIAL
    assert cloud.request_count == 0
    assert ollama.request_count == 1


@pytest.mark.parametrize("case", sorted(PERSONAL))
async def test_personal_data_stays_local_over_chat_stream(
    gateway: tuple[Gateway, Stub], ollama: FakeOllama, cloud: FakeOpenAI, case: str
) -> None:
    _, stub = gateway
    models = {
        part.route.model
        async for part in stub.ChatStream(pb.ChatStreamRequest(messages=user(PERSONAL[case])))
        if part.HasField("route")
    }
    assert models == {"llama-local"}
    assert cloud.request_count == 0
    assert ollama.request_count == 1


async def test_a_public_figure_by_name_still_goes_to_the_cloud(
    gateway: tuple[Gateway, Stub], ollama: FakeOllama, cloud: FakeOpenAI
) -> None:
    _, stub = gateway
    reply = await stub.Chat(pb.ChatRequest(messages=user(PUBLIC_FIGURE)))
    assert reply.route.model in CLOUD_MODELS
    assert reply.route.classification == policy_pb2.CLASSIFICATION_PUBLIC
    assert cloud.request_count == 1 and ollama.request_count == 0
    assert cloud_saw(cloud, "Ada Lovelace") == 1


async def test_the_tier_findings_are_in_the_dry_run_without_values(
    gateway: tuple[Gateway, Stub], cloud: FakeOpenAI
) -> None:
    _, stub = gateway
    route = await stub.Route(pb.ChatRequest(messages=user(EXAMPLE)))
    detectors = {f.detector: f.level for f in route.findings}
    assert detectors["pii.person"] == policy_pb2.CLASSIFICATION_CONFIDENTIAL
    assert detectors["pii.date_of_birth"] == policy_pb2.CLASSIFICATION_CONFIDENTIAL
    assert "Gonzalez" not in str(route) and "1961" not in str(route)
    assert cloud.request_count == 0


async def test_a_missing_model_fails_closed_and_the_log_says_why(
    ollama: FakeOllama, cloud: FakeOpenAI, tmp_path: Path
) -> None:
    log = tmp_path / "decisions.jsonl"
    config = bundled(ollama, cloud, log, ner_model=str(tmp_path / "no-such-model"))
    async with serve(config) as (_, stub):
        reply = await stub.Chat(pb.ChatRequest(messages=user(EXAMPLE)))
        assert reply.route.model == "llama-local"
        # Nothing to combine a name with: the model is not needed, the cloud may answer.
        other = await stub.Chat(pb.ChatRequest(messages=user("Write a haiku about autumn.")))
        assert other.route.model in CLOUD_MODELS
    assert cloud.request_count == 1
    assert cloud_saw(cloud, "Gonzalez") == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert "personal.model_unavailable" in records[0]["detectors"]
    assert "Gonzalez" not in log.read_text()


async def test_a_policy_that_insists_on_the_cloud_is_refused(
    ollama: FakeOllama, cloud: FakeOpenAI, tmp_path: Path
) -> None:
    config = make_config(
        {"local": ollama_model(ollama.url), "cloud": openai_model(cloud.url)},
        "local",
        policy={"dir": str(TEST_POLICY), "watch": False},
    )
    async with serve(config) as (_, stub):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Chat(pb.ChatRequest(messages=user(EXAMPLE), preferred_model="cloud"))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert status_detail(info.value, error_details_pb2.ErrorInfo).reason == "DATA_RESIDENCY"
    assert "Gonzalez" not in (info.value.details() or "")
    assert cloud.request_count == 0 and ollama.request_count == 0


async def test_local_routes_pay_nothing_and_off_turns_the_tier_off(
    ollama: FakeOllama, cloud: FakeOpenAI, tmp_path: Path
) -> None:
    config = bundled(ollama, cloud, tmp_path / "log.jsonl", ner="off")
    async with serve(config) as (gateway, stub):
        reply = await stub.Chat(pb.ChatRequest(messages=user(EXAMPLE)))
        assert reply.route.classification == policy_pb2.CLASSIFICATION_PUBLIC  # as before the tier
        assert gateway.pipeline.personal.tier.model.ready is False
