"""Redact and restore, end to end: the real gateway over gRPC, the cloud double over real HTTP
recording every request it receives, and counting how many of them carry an original value.

The cloud models are cleared for INTERNAL; e-mail addresses and phone numbers are CONFIDENTIAL
and configured as redactable, SSNs (RESTRICTED) are not.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from gateway.server import Gateway
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc, policy_pb2
from tests.fakes._server import FakeToolCall, Reply
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import make_config, ollama_model, openai_model, serve, status_detail

pytestmark = pytest.mark.integration

Stub = gateway_pb2_grpc.GatewayServiceStub

EMAIL = "jane.roe@gmail.com"
PHONE = "+1 650-253-0000"
SSN = "123-45-6789"
# Every redactable detector the pattern tier has, with a value it finds and its placeholder.
VALUES = {"pii.email": (EMAIL, "<EMAIL_1>"), "pii.phone": (PHONE, "<PHONE_1>")}
REDACT = {"detectors": ["pii.email", "pii.phone", "pii.person"], "max_level": "CONFIDENTIAL"}
PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")


def catalogue(local: FakeOllama, cloud: FakeOpenAI) -> dict[str, dict[str, Any]]:
    return {
        "local": ollama_model(local.url),
        "cloud": openai_model(cloud.url),
        "cloud2": openai_model(cloud.url, upstream_model="gpt-5.5"),
    }


@pytest.fixture(autouse=True)
def _fresh(local: FakeOllama, cloud: FakeOpenAI) -> None:
    local.reset()
    cloud.reset()


@pytest.fixture
def decisions(tmp_path: Path) -> Path:
    return tmp_path / "decisions.jsonl"


@pytest.fixture
async def gateway(
    local: FakeOllama, cloud: FakeOpenAI, decisions: Path
) -> AsyncIterator[tuple[Gateway, Stub]]:
    config = make_config(
        catalogue(local, cloud),
        "local",
        enforcement={"redact": REDACT},
        audit={"decision_log": str(decisions)},
    )
    async with serve(config) as pair:
        yield pair


def echo(body: Any) -> Reply:
    """The cloud model answers with every placeholder it was sent, in text and in a tool
    call's arguments: what a model working on the redacted request would do."""
    seen = sorted(set(PLACEHOLDER.findall(json.dumps(body.get("messages")))))
    return Reply(
        content="Noted: " + " and ".join(seen) + ".",
        tool_calls=(FakeToolCall("reply", {"to": seen, "note": f"write to {' '.join(seen)}"}),),
    )


def message(role: pb.Role, content: str = "", **extra: Any) -> pb.Message:
    return pb.Message(role=role, content=content, **extra)


def conversation(value: str) -> list[pb.Message]:
    """The value in the first turn, an assistant's reply, a tool call's arguments, a tool
    result (JSON) and the last turn."""
    args = json.dumps({"contact": value})
    return [
        message(pb.ROLE_USER, f"Support ticket from {value}: the invoice is wrong."),
        message(pb.ROLE_ASSISTANT, f"I will look up {value}."),
        message(
            pb.ROLE_ASSISTANT,
            tool_calls=[pb.ToolCall(id="call_1", name="lookup", arguments=args)],
        ),
        message(
            pb.ROLE_TOOL,
            json.dumps({"customer": {"contact": value, "plan": "pro"}}),
            tool_call_id="call_1",
            name="lookup",
        ),
        message(pb.ROLE_USER, f"Draft the answer to {value}, please."),
    ]


def carrying(cloud: FakeOpenAI, value: str) -> int:
    """Requests the cloud double received that carry `value` anywhere, JSON-escaped or not."""
    escaped = json.dumps(value)[1:-1]
    return sum(
        1
        for r in cloud.requests
        if value in json.dumps(r.body, ensure_ascii=False) or escaped in json.dumps(r.body)
    )


async def chat(stub: Stub, messages: list[pb.Message], **extra: Any) -> pb.ChatResponse:
    return await stub.Chat(pb.ChatRequest(messages=messages, **extra))


async def stream(
    stub: Stub, messages: list[pb.Message], **extra: Any
) -> tuple[list[str], list[pb.ToolCall], pb.RouteInfo]:
    deltas: list[str] = []
    calls: list[pb.ToolCall] = []
    route = pb.RouteInfo()
    async for part in stub.ChatStream(pb.ChatStreamRequest(messages=messages, **extra)):
        deltas.append(part.content_delta)
        calls.extend(part.tool_calls)
        if part.HasField("route"):
            route = part.route
    return deltas, calls, route


@pytest.mark.parametrize("detector", sorted(VALUES))
@pytest.mark.parametrize("rpc", ["Chat", "ChatStream"])
async def test_the_cloud_never_sees_the_value_and_the_caller_gets_it_back(
    gateway: tuple[Gateway, Stub], local: FakeOllama, cloud: FakeOpenAI, detector: str, rpc: str
) -> None:
    _, stub = gateway
    value, placeholder = VALUES[detector]
    cloud.respond_with(echo)
    messages = conversation(value)
    if rpc == "Chat":
        reply = await chat(stub, messages, preferred_model="cloud")
        content, calls, route = reply.content, list(reply.tool_calls), reply.route
    else:
        deltas, calls, route = await stream(stub, messages, preferred_model="cloud")
        content = "".join(deltas)
    assert cloud.request_count == 1 and local.request_count == 0
    assert carrying(cloud, value) == 0
    # One placeholder for the one value, wherever it sat (five places).
    sent = json.dumps(cloud.bodies[0]["messages"])
    assert sent.count(placeholder) == 5
    assert content == f"Noted: {placeholder}.".replace(placeholder, value)
    arguments = json.loads(calls[0].arguments)  # still valid JSON after restoring
    assert arguments == {"to": [value], "note": f"write to {value}"}
    assert route.model == "cloud"
    assert dict(route.redacted) == {detector: 1}
    assert route.classification == policy_pb2.CLASSIFICATION_CONFIDENTIAL


async def test_every_redactable_detector_in_one_request(
    gateway: tuple[Gateway, Stub], cloud: FakeOpenAI
) -> None:
    _, stub = gateway
    cloud.respond_with(echo)
    text = f"Call {PHONE} or write to {EMAIL}; the second address is max.mustermann@web.de."
    reply = await chat(stub, [message(pb.ROLE_USER, text)], preferred_model="cloud")
    for value in (PHONE, EMAIL, "max.mustermann@web.de"):
        assert carrying(cloud, value) == 0
        assert value in reply.content
    assert dict(reply.route.redacted) == {"pii.email": 2, "pii.phone": 1}
    assert not PLACEHOLDER.search(reply.content)


async def test_a_streamed_placeholder_split_at_every_position_is_restored(
    gateway: tuple[Gateway, Stub], cloud: FakeOpenAI
) -> None:
    _, stub = gateway
    placeholder = "<EMAIL_1>"
    before, after = "Please write to ", " today."
    splits = range(1, len(placeholder))
    for at in splits:
        cloud.enqueue(
            Reply(pieces=(before + placeholder[:at], placeholder[at:] + after)),
        )
    # And one character per chunk.
    cloud.enqueue(Reply(pieces=tuple(before + placeholder + after)))
    request = [message(pb.ROLE_USER, f"Ticket from {EMAIL}: answer them.")]
    for at in [*splits, None]:
        deltas, _, route = await stream(stub, request, preferred_model="cloud")
        assert "".join(deltas) == before + EMAIL + after, at
        # Nothing of a placeholder ever reaches the caller, and only its possible prefix is
        # held back: everything before the `<` was released at once.
        assert all("<" not in d and "EMAIL_" not in d for d in deltas)
        if at is not None:
            assert before in deltas
        assert dict(route.redacted) == {"pii.email": 1}
    assert carrying(cloud, EMAIL) == 0


async def test_an_invented_placeholder_is_left_as_is_and_counted(
    gateway: tuple[Gateway, Stub], cloud: FakeOpenAI, decisions: Path
) -> None:
    _, stub = gateway
    cloud.enqueue(Reply("Write to <EMAIL_1>, not <EMAIL_7> or <EMAIL_1."))
    reply = await chat(
        stub, [message(pb.ROLE_USER, f"Ticket from {EMAIL}.")], preferred_model="cloud"
    )
    assert reply.content == f"Write to {EMAIL}, not <EMAIL_7> or <EMAIL_1."
    written = await asyncio.to_thread(decisions.read_text)
    line = json.loads(written.splitlines()[-1])
    assert line["enforcement"] == "redacted"
    assert line["redacted"] == {"pii.email": 1}
    assert line["unrestored"] == 1
    assert EMAIL not in written
    assert line["candidates"][0]["allowed"] is True


async def test_a_local_candidate_gets_the_original_request(
    gateway: tuple[Gateway, Stub], local: FakeOllama, cloud: FakeOpenAI
) -> None:
    _, stub = gateway
    reply = await chat(stub, conversation(EMAIL))  # the test policy's default: local
    assert local.request_count == 1 and cloud.request_count == 0
    assert EMAIL in json.dumps(local.bodies[0])
    assert dict(reply.route.redacted) == {}


async def test_a_fallback_cloud_model_gets_the_same_redacted_request(
    gateway: tuple[Gateway, Stub], cloud: FakeOpenAI
) -> None:
    _, stub = gateway
    cloud.fail_next(503)
    cloud.respond_with(echo)
    reply = await chat(
        stub, conversation(EMAIL), preferred_model="cloud", labels={"fallbacks": "cloud2,local"}
    )
    assert reply.route.model == "cloud2" and reply.route.attempts == 2
    first, second = cloud.bodies
    assert first["messages"] == second["messages"]
    assert carrying(cloud, EMAIL) == 0
    assert EMAIL in reply.content


async def test_a_fallback_to_the_local_model_gets_the_original_and_no_restoring(
    gateway: tuple[Gateway, Stub], local: FakeOllama, cloud: FakeOpenAI
) -> None:
    _, stub = gateway
    cloud.fail_next(503)
    local.enqueue("Literal <EMAIL_1> from the local model.")
    reply = await chat(
        stub, conversation(EMAIL), preferred_model="cloud", labels={"fallbacks": "local"}
    )
    assert reply.route.model == "local"
    assert EMAIL in json.dumps(local.bodies[0])
    assert reply.content == "Literal <EMAIL_1> from the local model."
    assert dict(reply.route.redacted) == {}
    assert carrying(cloud, EMAIL) == 0


async def test_route_shows_the_redaction_and_the_policy_sees_it(
    gateway: tuple[Gateway, Stub], cloud: FakeOpenAI
) -> None:
    _, stub = gateway
    ticket = [message(pb.ROLE_USER, f"Ticket from {EMAIL}: refund the last invoice.")]
    answer = await stub.Route(pb.RouteRequest(messages=ticket, preferred_model="cloud"))
    assert answer.context.redactable
    assert answer.context.classification == policy_pb2.CLASSIFICATION_CONFIDENTIAL
    assert answer.context.redacted_classification == policy_pb2.CLASSIFICATION_PUBLIC
    assert dict(answer.route.redacted) == {"pii.email": 1}
    assert [(c.model, c.allowed, c.redacted) for c in answer.candidates] == [("cloud", True, True)]
    assert EMAIL not in str(answer)
    assert cloud.request_count == 0


MIXED = [message(pb.ROLE_USER, f"Customer {EMAIL} with SSN {SSN} asks for a refund.")]


async def _outcome(stub: Stub, **extra: Any) -> tuple[grpc.StatusCode, str, str]:
    try:
        reply = await chat(stub, MIXED, preferred_model="cloud", **extra)
    except grpc.aio.AioRpcError as error:
        info = status_detail(error, error_details_pb2.ErrorInfo)
        return error.code(), error.details() or "", info.reason
    return grpc.StatusCode.OK, reply.route.model, str(reply.route.rerouted)


@pytest.mark.parametrize("mode", ["deny", "reroute"])
async def test_one_non_redactable_finding_is_refused_or_rerouted_exactly_as_without_redaction(
    local: FakeOllama, cloud: FakeOpenAI, mode: str
) -> None:
    enforcement: dict[str, Any] = {"on_violation": mode, "reroute_order": ["local"]}
    outcomes = []
    for redact in (None, REDACT):
        config = make_config(
            catalogue(local, cloud),
            "local",
            enforcement={**enforcement, **({"redact": redact} if redact else {})},
        )
        async with serve(config) as (_, stub):
            outcomes.append(await _outcome(stub))
    assert outcomes[0] == outcomes[1]
    if mode == "deny":
        assert outcomes[1][0] == grpc.StatusCode.PERMISSION_DENIED
        assert outcomes[1][2] == "DATA_RESIDENCY"
    else:
        assert outcomes[1] == (grpc.StatusCode.OK, "local", "True")
        assert EMAIL in json.dumps(local.bodies[-1])  # local: the original request
    assert cloud.request_count == 0


async def test_a_declared_classification_is_never_redacted_away(
    gateway: tuple[Gateway, Stub], cloud: FakeOpenAI
) -> None:
    _, stub = gateway
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await chat(
            stub,
            conversation(EMAIL),
            preferred_model="cloud",
            classification=policy_pb2.CLASSIFICATION_CONFIDENTIAL,
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert cloud.request_count == 0


async def test_200_concurrent_requests_never_share_a_mapping(
    gateway: tuple[Gateway, Stub], local: FakeOllama, cloud: FakeOpenAI
) -> None:
    _, stub = gateway
    cloud.respond_with(echo)

    def values(i: int) -> tuple[str, str]:
        return f"customer{i:03d}@example{i % 7}.org", f"+1 415-555-{1000 + i:04d}"

    async def one(i: int) -> tuple[int, str]:
        email, phone = values(i)
        text = f"Ticket {i}: write to {email} or call {phone}."
        messages = [message(pb.ROLE_USER, text)]
        model = "local" if i % 5 == 0 else "cloud"
        if i % 2:
            reply = await chat(stub, messages, preferred_model=model)
            return i, reply.content + "".join(c.arguments for c in reply.tool_calls)
        deltas, calls, _ = await stream(stub, messages, preferred_model=model)
        return i, "".join(deltas) + "".join(c.arguments for c in calls)

    answers = await asyncio.gather(*(one(i) for i in range(200)))
    everything = [v for i in range(200) for v in values(i)]
    for i, answer in answers:
        own = values(i)
        if i % 5:  # the cloud's echo: exactly this request's own values came back
            assert all(v in answer for v in own), i
        assert not any(v in answer for v in everything if v not in own), i
    for value in everything:
        assert carrying(cloud, value) == 0
    assert cloud.request_count == 160 and local.request_count == 40


BUNDLED_POLICY = Path(__file__).resolve().parents[2] / "policies" / "routing"


@pytest.fixture
async def bundled(
    local: FakeOllama, cloud: FakeOpenAI, tmp_path: Path
) -> AsyncIterator[tuple[Gateway, Stub]]:
    """The bundled policy and redaction settings over the bundled aliases, on the doubles."""
    models = {
        "llama-local": ollama_model(local.url),
        **{
            alias: openai_model(cloud.url, upstream_model=upstream)
            for alias, upstream in {
                "claude-opus": "claude-opus-4-7",
                "gpt-5.5": "gpt-5.5",
                "deepseek-chat": "deepseek-chat",
                "gpt-5-mini": "gpt-5-mini",
            }.items()
        },
    }
    config = make_config(
        models,
        "llama-local",
        policy={"dir": str(BUNDLED_POLICY), "watch": False},
        enforcement={"on_violation": "deny", "reroute_order": ["llama-local"], "redact": REDACT},
        audit={"decision_log": str(tmp_path / "decisions.jsonl")},
    )
    async with serve(config) as pair:
        yield pair


@pytest.mark.parametrize("rpc", ["Chat", "ChatStream"])
async def test_the_bundled_policy_sends_a_redactable_support_ticket_to_the_cloud_redacted(
    bundled: tuple[Gateway, Stub], local: FakeOllama, cloud: FakeOpenAI, rpc: str
) -> None:
    _, stub = bundled
    cloud.respond_with(echo)
    ticket = conversation(EMAIL)
    labels = {"kind": "support_ticket"}
    if rpc == "Chat":
        reply = await chat(stub, ticket, labels=labels)
        content, route = reply.content, reply.route
    else:
        deltas, _, route = await stream(stub, ticket, labels=labels)
        content = "".join(deltas)
    assert route.location == policy_pb2.LOCATION_CLOUD
    assert dict(route.redacted) == {"pii.email": 1}
    assert EMAIL in content
    assert cloud.request_count == 1 and carrying(cloud, EMAIL) == 0
    assert local.request_count == 0


async def test_the_bundled_policy_keeps_other_confidential_requests_local(
    bundled: tuple[Gateway, Stub], local: FakeOllama, cloud: FakeOpenAI
) -> None:
    _, stub = bundled
    reply = await chat(stub, conversation(EMAIL))  # no support-ticket label
    assert reply.route.model == "llama-local" and dict(reply.route.redacted) == {}
    ssn_ticket = [message(pb.ROLE_USER, f"Ticket from {EMAIL}, SSN {SSN}.")]
    reply = await chat(stub, ssn_ticket, labels={"kind": "support_ticket"})
    assert reply.route.model == "llama-local"  # the SSN cannot be redacted
    assert cloud.request_count == 0 and local.request_count == 2


@pytest.mark.parametrize("rpc", ["Chat", "ChatStream"])
async def test_a_person_named_beside_a_contact_is_redacted_and_restored(
    gateway: tuple[Gateway, Stub], local: FakeOllama, cloud: FakeOpenAI, rpc: str
) -> None:
    """The personal-data tier's names are redactable too: a name next to an e-mail is
    CONFIDENTIAL (a combination), and both leave only as placeholders."""
    _, stub = gateway
    cloud.respond_with(echo)
    name, email = "Maria Gonzalez", "maria.gonzalez@gmail.com"
    messages = [
        message(
            pb.ROLE_USER,
            f"Support ticket from {name} ({email}): her invoice is wrong. "
            f"Draft a polite answer to {name}.",
        )
    ]
    if rpc == "Chat":
        reply = await chat(stub, messages, preferred_model="cloud")
        content, route = reply.content, reply.route
    else:
        deltas, _, route = await stream(stub, messages, preferred_model="cloud")
        content = "".join(deltas)
    assert cloud.request_count == 1 and local.request_count == 0
    assert carrying(cloud, name) == 0 and carrying(cloud, "Gonzalez") == 0
    assert carrying(cloud, email) == 0
    assert dict(route.redacted) == {"pii.email": 1, "pii.person": 1}
    assert name in content and email in content
    assert not PLACEHOLDER.search(content)
