"""Nothing the gateway would hold back in a message reaches the cloud through any other field,
encoding or syntax. Real gateway over real gRPC, a deliberately leaky policy (everything to the
cloud model, cleared for INTERNAL) in deny mode, and the OpenAI-compatible fake recording every
request it receives.

The request fields are enumerated from the proto descriptors, recursively: a string field added
to `ChatRequest` / `ChatStreamRequest` (or to a message they hold) is exercised by these tests
without anyone listing it, and fails them until it is inspected or shown not to be forwarded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf.descriptor import FieldDescriptor

from gateway.server import Gateway
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.data.egress_cases import AWS_ID, CARD, SCOPE, SECRETS
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import ROOT, make_config, ollama_model, openai_model, serve

# One gateway for the module (hundreds of calls): the tests share its event loop.
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

Stub = gateway_pb2_grpc.GatewayServiceStub
Request = pb.ChatRequest | pb.ChatStreamRequest

# Fields the gateway reads but never sends upstream (routing hints). Their placement still runs
# (nothing may leak), and the control below checks they are indeed not forwarded.
NOT_FORWARDED = {"preferred_model", "labels"}
# String fields holding JSON text: the value goes inside as a string and as an object key.
JSON_FIELDS = {"arguments", "parameters_json", "json_schema"}
VALUES = {"card": CARD, "ssn": "536-22-1418", "aws_key": AWS_ID}
MARK = "zq7marker"


def string_paths(descriptor: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every string leaf of a message type, as a field path (maps count as one leaf)."""
    for field in descriptor.fields:
        path = (*prefix, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            yield path
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            yield from string_paths(field.message_type, path)
        elif field.type == FieldDescriptor.TYPE_STRING:
            yield path


def paths(kind: type[Request]) -> list[tuple[str, ...]]:
    return list(string_paths(kind.DESCRIPTOR))


def base(kind: type[Request]) -> Request:
    """A valid request touching every message type: every role, a tool call and its result,
    a tool definition, a JSON schema answer format and a stop sequence."""
    call = pb.ToolCall(id="call_1", name="lookup", arguments='{"q": "status"}')
    return kind(
        messages=[
            pb.Message(role=pb.ROLE_SYSTEM, content="Be brief.", name="ops"),
            pb.Message(role=pb.ROLE_USER, content="What is the status?", name="jo"),
            pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[call]),
            pb.Message(role=pb.ROLE_TOOL, content="green", tool_call_id="call_1", name="lookup"),
        ],
        tools=[
            pb.Tool(
                name="lookup",
                description="Looks up a status.",
                parameters_json='{"type": "object", "properties": {"q": {"type": "string"}}}',
            )
        ],
        tool_choice="auto",
        response_format=pb.ResponseFormat(
            type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            schema_name="status",
            json_schema='{"type": "object"}',
        ),
        stop=["END"],
    )


def _text(name: str, value: str) -> str:
    if name in JSON_FIELDS:
        return json.dumps(
            {"type": "object", "description": f"x {value}", value: {"type": "string"}}
        )
    return f"x {value}"


def place(request: Any, path: tuple[str, ...], value: str) -> None:
    """Put `value` into every instance of the field at `path` (in every message, tool...)."""
    name, rest = path[0], path[1:]
    field = request.DESCRIPTOR.fields_by_name[name]
    if rest:
        targets = getattr(request, name) if field.is_repeated else [getattr(request, name)]
        for target in targets:
            place(target, rest, value)
    elif field.message_type is not None and field.message_type.GetOptions().map_entry:
        getattr(request, name)[value] = value
    elif field.is_repeated:
        getattr(request, name).append(_text(name, value))
    else:
        setattr(request, name, _text(name, value))


def received(cloud: FakeOpenAI, value: str) -> int:
    """How many requests the cloud fake received with `value` anywhere in them."""
    count = 0
    for recorded in cloud.requests:
        seen = json.dumps(recorded.body, ensure_ascii=False) + json.dumps(recorded.headers)
        if value in seen or value.replace(" ", "") in seen.replace(" ", ""):
            count += 1
    return count


async def call(stub: Stub, request: Request) -> grpc.StatusCode:
    try:
        if isinstance(request, pb.ChatStreamRequest):
            async for _ in stub.ChatStream(request):
                pass
        else:
            await stub.Chat(request)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(ollama: FakeOllama, cloud: FakeOpenAI) -> AsyncIterator[tuple[Gateway, Stub]]:
    config = make_config(
        {"local": ollama_model(ollama.url), "cloud": openai_model(cloud.url)},
        "local",
        policy={"dir": str(ROOT / "tests" / "policies" / "leaky"), "watch": False},
        enforcement={"on_violation": "deny"},
    )
    async with serve(config) as pair:
        yield pair


@pytest.fixture(autouse=True)
def _fresh(ollama: FakeOllama, cloud: FakeOpenAI) -> None:
    ollama.reset()
    cloud.reset()


KINDS: list[type[Request]] = [pb.ChatRequest, pb.ChatStreamRequest]
FIELDS = sorted({(kind.__name__, path) for kind in KINDS for path in paths(kind)})


async def test_both_request_types_have_the_same_string_fields() -> None:
    assert paths(pb.ChatRequest) == paths(pb.ChatStreamRequest)
    # Guards the enumeration itself: the fields known today are all there.
    assert {".".join(p) for p in paths(pb.ChatRequest)} >= {
        "messages.content", "messages.name", "messages.tool_call_id", "messages.tool_calls.id",
        "messages.tool_calls.name", "messages.tool_calls.arguments", "tools.name",
        "tools.description", "tools.parameters_json", "tool_choice",
        "response_format.schema_name", "response_format.json_schema", "stop",
        "preferred_model", "labels",
    }  # fmt: skip


@pytest.mark.parametrize(("kind", "path"), FIELDS, ids=[f"{k}:{'.'.join(p)}" for k, p in FIELDS])
async def test_control_marker_in_the_field_reaches_the_cloud_unless_never_forwarded(
    gateway: tuple[Gateway, Stub], cloud: FakeOpenAI, kind: str, path: tuple[str, ...]
) -> None:
    """Proves the field is really sent upstream (so the leak test below can fail)."""
    _, stub = gateway
    request = base(getattr(pb, kind))
    place(request, path, MARK)
    await call(stub, request)
    if path[0] in NOT_FORWARDED:
        assert received(cloud, MARK) == 0
    else:
        assert received(cloud, MARK) == 1, f"{'.'.join(path)} did not reach the cloud fake"


@pytest.mark.parametrize("value", sorted(VALUES))
@pytest.mark.parametrize(("kind", "path"), FIELDS, ids=[f"{k}:{'.'.join(p)}" for k, p in FIELDS])
async def test_sensitive_value_in_any_field_never_reaches_the_cloud(
    gateway: tuple[Gateway, Stub], cloud: FakeOpenAI, kind: str, path: tuple[str, ...], value: str
) -> None:
    _, stub = gateway
    request = base(getattr(pb, kind))
    place(request, path, VALUES[value])
    code = await call(stub, request)
    assert received(cloud, VALUES[value]) == 0
    expected = grpc.StatusCode.INVALID_ARGUMENT if path[0] == "preferred_model" else None
    if expected is not None:
        assert code == expected
    elif path[0] not in NOT_FORWARDED:
        assert code == grpc.StatusCode.PERMISSION_DENIED


CASES = [(case, text) for case, text, _ in SECRETS + SCOPE]


@pytest.mark.parametrize("kind", KINDS, ids=["Chat", "ChatStream"])
@pytest.mark.parametrize(("case", "text"), CASES, ids=[c for c, _ in CASES])
async def test_every_case_of_the_egress_review_stays_local(
    gateway: tuple[Gateway, Stub], cloud: FakeOpenAI, kind: type[Request], case: str, text: str
) -> None:
    _, stub = gateway
    user = kind(messages=[pb.Message(role=pb.ROLE_USER, content=text)])
    assert await call(stub, user) == grpc.StatusCode.PERMISSION_DENIED
    # The same text as a tool's description, where nobody looked before.
    tool = kind(
        messages=[pb.Message(role=pb.ROLE_USER, content="Use the tool.")],
        tools=[pb.Tool(name="lookup", description=text)],
    )
    assert await call(stub, tool) == grpc.StatusCode.PERMISSION_DENIED
    assert cloud.request_count == 0


@pytest.mark.parametrize("kind", KINDS, ids=["Chat", "ChatStream"])
async def test_ordinary_code_still_goes_to_the_cloud(
    gateway: tuple[Gateway, Stub], cloud: FakeOpenAI, kind: type[Request]
) -> None:
    code = (
        "def connect(self):\n"
        "    password = self.password\n"
        "    token = self.get_token()\n"
        "    api_key: Optional[str] = os.environ.get('API_KEY')\n"
        "    return client.login(user, password=password, version='3.5.0.1')\n"
        "evens = values[::2]\n"
    )
    _, stub = gateway
    request = kind(messages=[pb.Message(role=pb.ROLE_USER, content=f"Refactor:\n{code}")])
    assert await call(stub, request) == grpc.StatusCode.OK
    assert cloud.request_count == 1
