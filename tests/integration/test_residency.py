"""Tests that try to leak sensitive data to the cloud (docs/architecture.md, invariant 1) and
that the gateway fails closed (invariant 3). Every test runs the real gateway over real gRPC
against the upstream doubles over real HTTP, and counts what reached the cloud double itself.

The cloud model is cleared for INTERNAL; every secret used here (US SSN, payment card, AWS key
id) is RESTRICTED by default (gateway/inspect/detectors.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from gateway.inspect.classification import Classifier
from gateway.server import Gateway
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc, policy_pb2
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import (
    ROOT,
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
POLICIES = ROOT / "tests" / "policies"

SSN = "123-45-6789"


def fullwidth(text: str) -> str:
    """Digits as their full-width forms (U+FF10..U+FF19), which NFKC folds back."""
    return text.translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})


AWS_KEY = "AKIAZ7Q3XK2M5P8RTW4N"


@pytest.fixture(autouse=True)
def _fresh(local: FakeOllama, cloud: FakeOpenAI) -> None:
    local.reset()
    cloud.reset()


def catalogue(local: FakeOllama, cloud: FakeOpenAI) -> dict[str, dict[str, Any]]:
    return {"local": ollama_model(local.url), "cloud": openai_model(cloud.url)}


@pytest.fixture
async def gateway(local: FakeOllama, cloud: FakeOpenAI) -> AsyncIterator[tuple[Gateway, Stub]]:
    async with serve(make_config(catalogue(local, cloud), "local")) as pair:
        yield pair


def msg(role: pb.Role, content: str = "", **extra: Any) -> pb.Message:
    return pb.Message(role=role, content=content, **extra)


def user(text: str) -> pb.Message:
    return msg(pb.ROLE_USER, text)


def call(arguments: dict[str, str]) -> pb.ToolCall:
    return pb.ToolCall(id="call_1", name="file_claim", arguments=json.dumps(arguments))


# Each case hides a RESTRICTED value somewhere a naive gateway would not look.
LEAKS: dict[str, list[pb.Message]] = {
    "system_prompt": [
        msg(pb.ROLE_SYSTEM, f"You help with the customer whose SSN is {SSN}."),
        user("Draft a friendly greeting."),
    ],
    "assistant_history": [
        user("Which key did we use for the upload?"),
        msg(pb.ROLE_ASSISTANT, f"The upload used {AWS_KEY}."),
        user("Thanks, now write a haiku about clouds."),
    ],
    "tool_result": [
        user("Look up the claimant."),
        msg(pb.ROLE_ASSISTANT, tool_calls=[call({"claim": "C-17"})]),
        msg(pb.ROLE_TOOL, json.dumps({"ssn": SSN}), tool_call_id="call_1", name="file_claim"),
    ],
    "tool_call_arguments": [
        user("File the claim."),
        msg(pb.ROLE_ASSISTANT, tool_calls=[call({"ssn": SSN})]),
        msg(pb.ROLE_TOOL, "filed", tool_call_id="call_1", name="file_claim"),
    ],
    "split_over_two_messages": [
        user("Charge my card 4111 1111"),
        user("1111 1111 for the order, please."),
    ],
    "full_width_digits": [user(f"My SSN is {fullwidth(SSN)}, update my file.")],
    "zero_width_characters": [user("My SSN is 123\u200b-45-\u200b6789, update my file.")],
    "zero_width_in_key": [user("Rotate AKIA\u200bZ7Q3XK2M\u200c5P8RTW4N today.")],
}


def assert_no_secret(text: str) -> None:
    for secret in (SSN, "6789", AWS_KEY, "5P8RTW4N", "4111"):
        assert secret not in text


@pytest.mark.parametrize("case", sorted(LEAKS))
async def test_hidden_secret_never_goes_to_the_requested_cloud_model(
    gateway: tuple[Gateway, Stub], local: FakeOllama, cloud: FakeOpenAI, case: str
) -> None:
    _, stub = gateway
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Chat(pb.ChatRequest(messages=LEAKS[case], preferred_model="cloud"))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    details = info.value.details() or ""
    assert "'cloud'" in details and "RESTRICTED" in details
    assert_no_secret(details)
    meta = status_detail(info.value, error_details_pb2.ErrorInfo)
    assert meta.reason == "DATA_RESIDENCY"
    assert meta.metadata["model"] == "cloud"
    assert meta.metadata["classification"] == "RESTRICTED"
    assert cloud.request_count == 0
    assert local.request_count == 0


@pytest.mark.parametrize("case", sorted(LEAKS))
async def test_cloud_fallback_is_dropped_and_the_local_model_answers(
    gateway: tuple[Gateway, Stub], local: FakeOllama, cloud: FakeOpenAI, case: str
) -> None:
    _, stub = gateway
    reply = await stub.Chat(pb.ChatRequest(messages=LEAKS[case], labels={"fallbacks": "cloud"}))
    assert reply.route.model == "local"
    assert reply.route.classification == policy_pb2.CLASSIFICATION_RESTRICTED
    assert local.request_count == 1
    assert cloud.request_count == 0


async def test_route_lists_the_dropped_cloud_fallback_with_its_reason(
    gateway: tuple[Gateway, Stub], cloud: FakeOpenAI
) -> None:
    _, stub = gateway
    reply = await stub.Route(
        pb.RouteRequest(messages=LEAKS["system_prompt"], labels={"fallbacks": "cloud"})
    )
    candidates = {c.model: c for c in reply.candidates}
    assert candidates["local"].allowed
    assert not candidates["cloud"].allowed
    assert "RESTRICTED" in candidates["cloud"].reason
    assert "INTERNAL" in candidates["cloud"].reason
    assert [f.detector for f in reply.findings] == ["gov.us_ssn"]
    assert cloud.request_count == 0


async def test_declaring_public_does_not_lower_a_finding(
    gateway: tuple[Gateway, Stub], local: FakeOllama, cloud: FakeOpenAI
) -> None:
    _, stub = gateway
    messages = [user(f"Totally public text, ignore this: {AWS_KEY}")]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Chat(
            pb.ChatRequest(
                messages=messages,
                classification=policy_pb2.CLASSIFICATION_PUBLIC,
                preferred_model="cloud",
            )
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert status_detail(info.value, error_details_pb2.ErrorInfo).reason == "DATA_RESIDENCY"
    # Declared PUBLIC with a cloud fallback: still only the local model.
    reply = await stub.Chat(
        pb.ChatRequest(
            messages=messages,
            classification=policy_pb2.CLASSIFICATION_PUBLIC,
            labels={"fallbacks": "cloud"},
        )
    )
    assert reply.route.model == "local"
    assert reply.route.classification == policy_pb2.CLASSIFICATION_RESTRICTED
    assert cloud.request_count == 0


async def test_declared_level_alone_keeps_content_local(
    gateway: tuple[Gateway, Stub], local: FakeOllama, cloud: FakeOpenAI
) -> None:
    # No detector fires; the caller's own CONFIDENTIAL declaration is enough.
    _, stub = gateway
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Chat(
            pb.ChatRequest(
                messages=[user("Quarterly numbers, first draft.")],
                classification=policy_pb2.CLASSIFICATION_CONFIDENTIAL,
                preferred_model="cloud",
            )
        )
    assert (
        status_detail(info.value, error_details_pb2.ErrorInfo).metadata["classification"]
        == "CONFIDENTIAL"
    )
    assert cloud.request_count == 0


async def test_non_sensitive_content_may_use_the_cloud(
    gateway: tuple[Gateway, Stub], cloud: FakeOpenAI
) -> None:
    # The counterpart of the tests above: the cloud double is reachable and counts requests.
    _, stub = gateway
    reply = await stub.Chat(
        pb.ChatRequest(messages=[user("Capital of France?")], preferred_model="cloud")
    )
    assert reply.route.model == "cloud"
    assert cloud.request_count == 1


# -- a deliberately wrong policy -----------------------------------------------------------


def leaky_config(
    local: FakeOllama, cloud: FakeOpenAI, mode: str, order: list[str] | None = None
) -> dict[str, Any]:
    enforcement: dict[str, Any] = {"on_violation": mode}
    if order is not None:
        enforcement["reroute_order"] = order
    return config_data(
        catalogue(local, cloud),
        "local",
        policy={"dir": str(POLICIES / "leaky"), "watch": False},
        enforcement=enforcement,
    )


async def test_wrong_policy_in_deny_mode_is_refused(local: FakeOllama, cloud: FakeOpenAI) -> None:
    config = make_config(**_split(leaky_config(local, cloud, "deny")))
    async with serve(config) as (_, stub):
        for case in ("system_prompt", "tool_call_arguments", "full_width_digits"):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Chat(pb.ChatRequest(messages=LEAKS[case]))
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            meta = status_detail(info.value, error_details_pb2.ErrorInfo)
            assert (meta.reason, meta.metadata["model"]) == ("DATA_RESIDENCY", "cloud")
            assert meta.metadata["classification"] == "RESTRICTED"
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Route(pb.RouteRequest(messages=LEAKS[case]))
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # The same policy still routes PUBLIC content where it says.
        reply = await stub.Chat(pb.ChatRequest(messages=[user("Capital of France?")]))
        assert reply.route.model == "cloud"
    assert cloud.request_count == 1
    assert local.request_count == 0


async def test_wrong_policy_in_reroute_mode_goes_to_the_compliant_model(
    local: FakeOllama, cloud: FakeOpenAI
) -> None:
    config = make_config(**_split(leaky_config(local, cloud, "reroute", ["cloud", "local"])))
    async with serve(config) as (_, stub):
        for case in ("system_prompt", "assistant_history", "zero_width_characters"):
            reply = await stub.Chat(pb.ChatRequest(messages=LEAKS[case]))
            assert reply.route.model == "local"
            assert reply.route.rerouted
            assert reply.route.rule == "leaky/1"
        stream = [
            part
            async for part in stub.ChatStream(pb.ChatStreamRequest(messages=LEAKS["tool_result"]))
        ]
        assert stream[-1].route.model == "local" and stream[-1].route.rerouted
        route = await stub.Route(pb.RouteRequest(messages=LEAKS["system_prompt"]))
        assert route.route.model == "local" and route.route.rerouted
        assert route.decision.model == "cloud"  # what the policy asked for, for the record
        candidates = [(c.model, c.allowed) for c in route.candidates]
        assert candidates == [("local", True), ("cloud", False)]
        assert "RESTRICTED" in route.candidates[1].reason
        # Content the cloud may see is not rerouted.
        public = await stub.Chat(pb.ChatRequest(messages=[user("Capital of France?")]))
        assert public.route.model == "cloud" and not public.route.rerouted
    assert local.request_count == 4
    assert cloud.request_count == 1
    assert all(body["messages"][-1]["content"] == "Capital of France?" for body in cloud.bodies)


async def test_reroute_without_a_compliant_model_is_refused(
    local: FakeOllama, cloud: FakeOpenAI
) -> None:
    config = make_config(**_split(leaky_config(local, cloud, "reroute", ["cloud"])))
    async with serve(config) as (_, stub):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Chat(pb.ChatRequest(messages=LEAKS["system_prompt"]))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert status_detail(info.value, error_details_pb2.ErrorInfo).reason == "DATA_RESIDENCY"
    assert "reroute_order" in (info.value.details() or "")
    assert cloud.request_count == 0 and local.request_count == 0


def _split(data: dict[str, Any]) -> dict[str, Any]:
    """config_data's output as make_config's keyword arguments."""
    rest = dict(data)
    models, default = rest.pop("models"), rest.pop("default_model")
    return {"models": models, "default": default, **rest}


# -- fail closed ------------------------------------------------------------------------------


async def test_policy_evaluation_error_calls_no_model(local: FakeOllama, cloud: FakeOpenAI) -> None:
    config = make_config(
        catalogue(local, cloud), "local", policy={"dir": str(POLICIES / "broken"), "watch": False}
    )
    async with serve(config) as (_, stub):
        # The policy works when the label is present: the failure below is the evaluation.
        ok = await stub.Chat(pb.ChatRequest(messages=[user("hi")], labels={"route": "local"}))
        assert ok.route.model == "local"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Chat(pb.ChatRequest(messages=[user(f"hi {SSN}")]))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert (
        status_detail(info.value, error_details_pb2.ErrorInfo).reason == "POLICY_EVALUATION_FAILED"
    )
    assert_no_secret(info.value.details() or "")
    assert local.request_count == 1 and cloud.request_count == 0


async def test_detector_error_calls_no_model(
    gateway: tuple[Gateway, Stub],
    local: FakeOllama,
    cloud: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_scan(self: Classifier, data: bytes) -> tuple[()]:
        # A failure whose text quotes the content, as a careless library might.
        raise RuntimeError(f"scanner crashed on {data[:40]!r}")

    monkeypatch.setattr(Classifier, "scan", broken_scan)
    _, stub = gateway
    for model in ("cloud", "local"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Chat(pb.ChatRequest(messages=[user(f"SSN {SSN}")], preferred_model=model))
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert status_detail(info.value, error_details_pb2.ErrorInfo).reason == "INSPECTION_FAILED"
        assert_no_secret(info.value.details() or "")
    assert local.request_count == 0 and cloud.request_count == 0


async def test_no_configured_candidate_calls_no_model(
    local: FakeOllama, cloud: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The local model's key variable is unset, so it is not configured; the cloud fallback
    # must not stand in for it.
    monkeypatch.delenv("CELGATE_TEST_UNSET_KEY", raising=False)
    models = catalogue(local, cloud)
    models["local"] = openai_model(
        cloud.url, location="on_prem", clearance="RESTRICTED", api_key_env="CELGATE_TEST_UNSET_KEY"
    )
    async with serve(make_config(models, "local")) as (_, stub):
        listed = await stub.ListModels(pb.ListModelsRequest())
        assert {m.alias: m.healthy for m in listed.models} == {"local": False, "cloud": True}
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Chat(
                pb.ChatRequest(messages=LEAKS["system_prompt"], labels={"fallbacks": "cloud"})
            )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "local: not_configured" in (info.value.details() or "")
    assert cloud.request_count == 0 and local.request_count == 0


# -- air-gapped mode --------------------------------------------------------------------------


def test_airgapped_serve_with_a_cloud_model_exits_2_naming_it(
    tmp_path: Path, local: FakeOllama, cloud: FakeOpenAI
) -> None:
    data = config_data(
        {"local": ollama_model(local.url), "gpt-cloud": openai_model(cloud.url)},
        "local",
        airgapped=True,
    )
    done = serve_once(data, tmp_path)
    assert done.returncode == 2
    assert "airgapped" in done.stderr and "gpt-cloud" in done.stderr
    assert "Traceback" not in done.stderr
    assert cloud.request_count == 0 and local.request_count == 0


async def test_airgapped_gateway_creates_only_on_prem_clients(local: FakeOllama) -> None:
    config = make_config({"local": ollama_model(local.url)}, "local", airgapped=True)
    async with serve(config) as (gw, stub):
        assert set(gw.pipeline.dispatcher.providers) == {"local"}
        reply = await stub.Chat(pb.ChatRequest(messages=[user("hi")]))
        assert reply.route.model == "local"
