"""Request protos from plain Python arguments (strings, dicts), so callers need not build
messages by hand. Unknown names raise ValueError naming the argument."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, TypeVar

from celgate_client.v1 import gateway_pb2 as pb
from celgate_client.v1 import policy_pb2

AnyRequest = pb.ChatRequest | pb.ChatStreamRequest | pb.RouteRequest
R = TypeVar("R", pb.ChatRequest, pb.ChatStreamRequest, pb.RouteRequest)

MessageLike = pb.Message | Mapping[str, Any]
Messages = str | Sequence[MessageLike]
ToolLike = pb.Tool | Mapping[str, Any]
ResponseFormatLike = pb.ResponseFormat | str | Mapping[str, Any]


class Options(TypedDict, total=False):
    """What `chat`, `chat_stream` and `route` accept besides the messages."""

    model: str
    task_type: str | int
    classification: str | int
    labels: Mapping[str, str]
    tools: Sequence[ToolLike]
    tool_choice: str
    response_format: ResponseFormatLike
    temperature: float
    top_p: float
    max_tokens: int
    stop: Sequence[str]


_ROLES = {
    "system": pb.ROLE_SYSTEM,
    "user": pb.ROLE_USER,
    "assistant": pb.ROLE_ASSISTANT,
    "tool": pb.ROLE_TOOL,
}
_FORMATS = {
    "text": pb.RESPONSE_FORMAT_TYPE_TEXT,
    "json_object": pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
    "json_schema": pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
}


def _enum(value: str | int, enum: Any, prefix: str, argument: str) -> int:
    if isinstance(value, int):
        return value
    name = prefix + value.strip().upper()
    try:
        return int(enum.Value(name))
    except ValueError:
        known = ", ".join(n.removeprefix(prefix).lower() for n in enum.keys()[1:])
        raise ValueError(f"{argument}: unknown value {value!r}; known: {known}") from None


def _message(value: MessageLike, index: int) -> pb.Message:
    if isinstance(value, pb.Message):
        return value
    role = value.get("role", "")
    if role not in _ROLES:
        raise ValueError(f"messages[{index}].role must be system, user, assistant or tool")
    calls = [
        pb.ToolCall(
            id=call.get("id", ""),
            name=call["name"],
            arguments=call["arguments"]
            if isinstance(call.get("arguments"), str)
            else json.dumps(call.get("arguments", {})),
        )
        for call in value.get("tool_calls", ())
    ]
    return pb.Message(
        role=_ROLES[role],
        content=value.get("content") or "",
        tool_calls=calls,
        tool_call_id=value.get("tool_call_id", ""),
        name=value.get("name", ""),
    )


def _tool(value: ToolLike) -> pb.Tool:
    if isinstance(value, pb.Tool):
        return value
    parameters = value.get("parameters")
    return pb.Tool(
        name=value["name"],
        description=value.get("description", ""),
        parameters_json=json.dumps(parameters) if parameters is not None else "",
    )


def _response_format(value: ResponseFormatLike) -> pb.ResponseFormat:
    if isinstance(value, pb.ResponseFormat):
        return value
    if isinstance(value, str):
        value = {"type": value}
    kind = value.get("type", "")
    if kind not in _FORMATS:
        raise ValueError("response_format type must be text, json_object or json_schema")
    schema = value.get("schema")
    return pb.ResponseFormat(
        type=_FORMATS[kind],
        schema_name=value.get("name", ""),
        json_schema=json.dumps(schema) if schema is not None else "",
        strict=bool(value.get("strict", False)),
    )


def build(kind: type[R], messages: Messages | R, options: Options) -> R:
    """A request of `kind` from messages and options, or `messages` itself if it already is one."""
    if isinstance(messages, kind):
        if options:
            raise TypeError("pass options inside the request message, not as keywords")
        return messages
    if isinstance(messages, AnyRequest):
        raise TypeError(f"expected a {kind.__name__}, got {type(messages).__name__}")
    listed: Sequence[MessageLike] = (
        [{"role": "user", "content": messages}] if isinstance(messages, str) else messages
    )
    request = kind(messages=[_message(m, i) for i, m in enumerate(listed)])
    if "model" in options:
        request.preferred_model = options["model"]
    if "task_type" in options:
        request.task_type = _enum(  # type: ignore[assignment]
            options["task_type"], policy_pb2.TaskType, "TASK_TYPE_", "task_type"
        )
    if "classification" in options:
        request.classification = _enum(  # type: ignore[assignment]
            options["classification"],
            policy_pb2.Classification,
            "CLASSIFICATION_",
            "classification",
        )
    if "labels" in options:
        request.labels.update(options["labels"])
    if "tools" in options:
        request.tools.extend(_tool(t) for t in options["tools"])
    if "tool_choice" in options:
        request.tool_choice = options["tool_choice"]
    if "response_format" in options:
        request.response_format.CopyFrom(_response_format(options["response_format"]))
    if "temperature" in options:
        request.temperature = options["temperature"]
    if "top_p" in options:
        request.top_p = options["top_p"]
    if "max_tokens" in options:
        request.max_tokens = options["max_tokens"]
    if "stop" in options:
        request.stop.extend(options["stop"])
    return request
