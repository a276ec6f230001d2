"""The HTTP surface's mappings without a server: errors to statuses and shapes, the two wire
formats to the API's request, and answers to chunks and events."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway import errors
from gateway.chat import Chunk, Route, ToolCall, Usage
from gateway.config import LimitsConfig
from gateway.convert import to_chat_request
from gateway.http.chat_completions import ChunkWriter, parse_chat
from gateway.http.messages import EventWriter, parse_messages
from gateway.http.status import anthropic_error, http_error, status_of
from gateway.levels import Level
from gateway.v1 import gateway_pb2 as pb


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (
            errors.InvalidRequest("temperature", "must be between 0 and 2"),
            400,
            "invalid_request_error",
        ),
        (errors.InvalidRequest("preferred_model", "unknown model 'x'"), 404, "not_found_error"),
        (errors.Unauthenticated("no"), 401, "authentication_error"),
        (errors.PermissionDenied("no", reason="DATA_RESIDENCY"), 403, "permission_error"),
        (errors.BudgetExhausted("spent", subject="tenant:a"), 429, "insufficient_quota"),
        (errors.RateLimited("slow down", retry_after_s=2.5), 429, "rate_limit_error"),
        (errors.NoPolicy("none"), 503, "service_unavailable"),
        (errors.Unavailable("down"), 503, "service_unavailable"),
        (errors.DeadlineExceeded("late"), 504, "timeout"),
        (errors.UpstreamRejected("bad", status=422, model="m"), 422, "upstream_error"),
        (errors.UpstreamRejected("key", status=401, model="m"), 502, "upstream_error"),
        (errors.InternalError("bug"), 500, "server_error"),
    ],
)
def test_status_of_every_error_kind(error: errors.GatewayError, status: int, kind: str) -> None:
    assert status_of(error) == (status, kind)
    shaped = http_error(error, "d1")
    assert shaped.status == status
    assert shaped.body["error"]["code"] == error.reason
    assert shaped.body["celgate"]["decision_id"] == "d1"
    assert shaped.headers["x-celgate-decision-id"] == "d1"
    assert anthropic_error(shaped).body["type"] == "error"


def test_retry_headers() -> None:
    rate = http_error(errors.RateLimited("slow", retry_after_s=2.1))
    assert rate.headers["retry-after"] == "3" and rate.headers["retry-after-ms"] == "2100"
    budget = http_error(errors.BudgetExhausted("spent", subject="tenant:a"))
    assert budget.headers["x-should-retry"] == "false" and "retry-after" not in budget.headers


def test_field_names_are_the_http_ones() -> None:
    shaped = http_error(errors.InvalidRequest("preferred_model", "unknown model 'x'"))
    assert shaped.body["error"]["param"] == "model"
    assert shaped.body["error"]["message"] == "model: unknown model 'x'"


def openai_body(**fields: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **fields}


def test_chat_request_mapping() -> None:
    call = parse_chat(
        {
            "model": "cloud",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
            ],
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "stop": "END",
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "ignored",
        },
        {"x-celgate-labels": "team=a, project=atlas", "x-celgate-task-type": "PLANNING"},
    )
    request = call.request
    assert [m.role for m in request.messages] == [pb.ROLE_SYSTEM, pb.ROLE_USER]
    assert request.messages[1].content == "a\nb"
    assert request.max_tokens == 20  # the current name wins over the deprecated one
    assert list(request.stop) == ["END"]
    assert request.tool_choice == "f"
    assert request.preferred_model == "cloud"
    assert dict(request.labels) == {"team": "a", "project": "atlas"}
    assert request.task_type == 3  # TASK_TYPE_PLANNING
    assert call.stream and call.include_usage
    # The result goes through the gRPC surface's own translation.
    plain = to_chat_request(request, LimitsConfig(), tenant="t", streaming=True)
    assert plain.params.messages[0].role == "system" and plain.streaming


def test_auto_model_is_no_preference() -> None:
    assert parse_chat(openai_body(), {}).request.preferred_model == ""
    assert parse_chat(openai_body(model=""), {}).model == "auto"


def test_anthropic_request_mapping() -> None:
    call = parse_messages(
        {
            "model": "auto",
            "max_tokens": 100,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "t1", "name": "w", "input": {"c": "Oslo"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "clear"},
                        {"type": "text", "text": "And tomorrow?"},
                    ],
                },
            ],
            "tool_choice": {"type": "any"},
            "stop_sequences": ["X"],
        },
        {},
    )
    request = call.request
    roles = [m.role for m in request.messages]
    assert roles == [pb.ROLE_SYSTEM, pb.ROLE_USER, pb.ROLE_ASSISTANT, pb.ROLE_TOOL, pb.ROLE_USER]
    assistant = request.messages[2]
    assert assistant.content == "Checking."
    assert json.loads(assistant.tool_calls[0].arguments) == {"c": "Oslo"}
    assert request.messages[3].tool_call_id == "t1" and request.messages[3].content == "clear"
    assert request.tool_choice == "required" and request.max_tokens == 100
    assert list(request.stop) == ["X"]


def test_anthropic_refuses_what_it_cannot_map() -> None:
    with pytest.raises(errors.InvalidRequest) as image:
        parse_messages(
            {
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}],
            },
            {},
        )
    assert image.value.field == "messages[0].content[0].type"
    with pytest.raises(errors.InvalidRequest) as tool_result:
        parse_messages(
            {
                "max_tokens": 5,
                "messages": [
                    {"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "x"}]}
                ],
            },
            {},
        )
    assert tool_result.value.field == "messages[0].content[0].type"


def route() -> Route:
    return Route(
        model="local",
        provider="ollama",
        upstream_model="llama3.1:8b",
        location="on_prem",
        rule="r",
        classification=Level.PUBLIC,
        cost_usd=0.5,
        policy_name="p",
        policy_revision="1",
        decision_id="d",
        attempts=1,
        rerouted=False,
    )


def test_chunk_writer_sequence() -> None:
    writer = ChunkWriter("d", "auto", include_usage=True)
    first = writer.chunks(Chunk(content_delta="a"), None)
    calls = (ToolCall(id="c1", name="f", arguments="{}"),)
    last = writer.chunks(
        Chunk(tool_calls=calls, finish_reason="tool_calls", usage=Usage(3, 4)), route()
    )
    assert first[0]["choices"][0]["delta"] == {"role": "assistant", "content": "a"}
    assert last[0]["choices"][0]["delta"]["tool_calls"][0]["index"] == 0
    assert last[1]["choices"][0]["finish_reason"] == "tool_calls"
    assert last[2]["choices"] == [] and last[2]["usage"]["total_tokens"] == 7
    assert last[2]["celgate"]["model"] == "local" and last[2]["model"] == "local"


def test_event_writer_sequence() -> None:
    writer = EventWriter("d", "auto")
    events = writer.events(Chunk(content_delta="a"), None)
    events += writer.events(Chunk(content_delta="b"), None)
    calls = (ToolCall(id="c1", name="f", arguments='{"x": 1}'),)
    events += writer.events(
        Chunk(tool_calls=calls, finish_reason="tool_calls", usage=Usage(3, 4)), route()
    )
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    indexes = [data.get("index") for name, data in events if name.startswith("content_block")]
    assert indexes == [0, 0, 0, 0, 1, 1, 1]
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "tool_use"
    assert final["usage"]["output_tokens"] == 4 and final["celgate"]["decision_id"] == "d"
