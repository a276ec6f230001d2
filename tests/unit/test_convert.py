"""Request validation and translation: each bad input names its field."""

from __future__ import annotations

import pytest

from gateway.config import LimitsConfig
from gateway.convert import to_chat_request
from gateway.errors import InvalidRequest
from gateway.levels import Level
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import policy_pb2

LIMITS = LimitsConfig(max_message_chars=100, max_total_chars=150, max_messages=3)


def user(text: str = "hello") -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=text)


def convert(**fields: object) -> object:
    fields.setdefault("messages", [user()])
    return to_chat_request(pb.ChatRequest(**fields), LIMITS, tenant="t", streaming=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"messages": []}, "messages", "at least one"),
        (
            {"messages": [pb.Message(role=pb.ROLE_UNSPECIFIED, content="x")]},
            "messages[0].role",
            "ROLE_",
        ),
        ({"messages": [pb.Message(role=9, content="x")]}, "messages[0].role", "ROLE_"),
        ({"messages": [user("x" * 101)]}, "messages[0].content", "limit is 100"),
        ({"messages": [user("x" * 80), user("y" * 80)]}, "messages", "limit is 150"),
        ({"messages": [user()] * 4}, "messages", "limit is 3"),
        ({"messages": [pb.Message(role=pb.ROLE_USER)]}, "messages[0].content", "empty"),
        (
            {"messages": [pb.Message(role=pb.ROLE_TOOL, content="42")]},
            "messages[0].tool_call_id",
            "tool message",
        ),
        (
            {"tools": [pb.Tool(name="f", parameters_json="{nope")]},
            "tools[0].parameters_json",
            "not valid JSON",
        ),
        (
            {"tools": [pb.Tool(name="f", parameters_json="[1]")]},
            "tools[0].parameters_json",
            "JSON object",
        ),
        ({"tools": [pb.Tool(description="no name")]}, "tools[0].name", "required"),
        ({"temperature": 3.0}, "temperature", "between 0 and 2"),
        ({"top_p": 0.0}, "top_p", "greater than 0"),
        ({"max_tokens": 0}, "max_tokens", "positive"),
        ({"classification": 17}, "classification", "Classification"),
        ({"task_type": 99}, "task_type", "TaskType"),
        (
            {
                "response_format": pb.ResponseFormat(
                    type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, json_schema="{}"
                )
            },
            "response_format.schema_name",
            "required",
        ),
    ],
)
def test_bad_input_names_the_field(fields: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        convert(**fields)
    assert info.value.field == field
    assert words in info.value.message


def test_error_never_quotes_content() -> None:
    secret = "my-secret-" + "z" * 100
    with pytest.raises(InvalidRequest) as info:
        convert(messages=[user(secret)])
    assert "my-secret" not in str(info.value)


def test_full_request_translates() -> None:
    request = convert(
        messages=[
            pb.Message(role=pb.ROLE_SYSTEM, content="be brief"),
            user("weather?"),
            pb.Message(
                role=pb.ROLE_ASSISTANT,
                tool_calls=[pb.ToolCall(id="c1", name="weather", arguments='{"city":"Oslo"}')],
            ),
            pb.Message(role=pb.ROLE_TOOL, tool_call_id="c1", content="sunny"),
        ][:3],
        tools=[pb.Tool(name="weather", parameters_json='{"type":"object"}')],
        tool_choice="auto",
        response_format=pb.ResponseFormat(
            type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            schema_name="w",
            json_schema='{"type":"object"}',
        ),
        temperature=0.2,
        max_tokens=64,
        stop=["END"],
        classification=policy_pb2.CLASSIFICATION_CONFIDENTIAL,
        task_type=policy_pb2.TASK_TYPE_TOOL_USE,
        preferred_model="m",
        labels={"team": "a"},
    )
    params = request.params  # type: ignore[attr-defined]
    assert [m.role for m in params.messages] == ["system", "user", "assistant"]
    assert params.messages[2].tool_calls[0].arguments == '{"city":"Oslo"}'
    assert params.tools[0].parameters == {"type": "object"}
    assert params.response_format.schema == {"type": "object"}
    assert params.temperature == pytest.approx(0.2)
    assert params.top_p is None
    assert params.max_tokens == 64 and params.stop == ("END",)
    assert request.declared is Level.CONFIDENTIAL  # type: ignore[attr-defined]
    assert request.labels == {"team": "a"}  # type: ignore[attr-defined]


def test_levels_match_the_proto_enum() -> None:
    for level in Level:
        assert policy_pb2.Classification.Value(f"CLASSIFICATION_{level.name}") == level.value
