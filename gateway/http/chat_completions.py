"""OpenAI's Chat Completions wire format <-> celgate's request and answer.

Protocol mapping only. A request body is read into the API's `ChatStreamRequest` message and
handed to the same translation and validation the gRPC surface uses (`convert`), so both
surfaces produce the same plain request for the pipeline, under the same limits: a value the
gRPC API refuses cannot get in through JSON. Problems raise `InvalidRequest` naming the JSON
field (`messages[2].content[0].type`) and never quote content.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.chat import ChatResult, Chunk, Route, ToolCall, Usage
from gateway.errors import InvalidRequest
from gateway.http.fields import (
    array,
    boolean,
    celgate_inputs,
    integer,
    number,
    obj,
    string,
)
from gateway.v1 import gateway_pb2 as pb

AUTO_MODEL = "auto"

_ROLES = {
    "system": pb.ROLE_SYSTEM,
    # OpenAI's newer name for system instructions.
    "developer": pb.ROLE_SYSTEM,
    "user": pb.ROLE_USER,
    "assistant": pb.ROLE_ASSISTANT,
    "tool": pb.ROLE_TOOL,
}
_FORMATS = {
    "text": pb.RESPONSE_FORMAT_TYPE_TEXT,
    "json_object": pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
    "json_schema": pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
}

# Accepted and ignored: they change nothing celgate or the upstream would do, and none is
# forwarded upstream.
_IGNORED = frozenset({"user", "store", "metadata", "parallel_tool_calls", "service_tier"})
_KNOWN = frozenset(
    {
        "model",
        "messages",
        "tools",
        "tool_choice",
        "response_format",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "stream",
        "stream_options",
        "n",
        "celgate",
    }
)


@dataclass(frozen=True, slots=True)
class ChatCall:
    """A parsed Chat Completions request: the API message and how to answer."""

    request: pb.ChatStreamRequest
    model: str  # as the caller wrote it ("auto" when empty)
    stream: bool
    include_usage: bool


def _content(value: Any, where: str) -> str:
    """A message's content: a string, null, or an array of text parts (joined by newlines)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    parts = []
    for j, part in enumerate(array(value, where)):
        part = obj(part, f"{where}[{j}]")
        kind = part.get("type")
        if kind != "text":
            raise InvalidRequest(f"{where}[{j}].type", "only 'text' content parts are supported")
        parts.append(string(part.get("text"), f"{where}[{j}].text"))
    return "\n".join(parts)


def _tool_call(value: Any, where: str) -> pb.ToolCall:
    call = obj(value, where)
    if call.get("type", "function") != "function":
        raise InvalidRequest(f"{where}.type", "must be 'function'")
    function = obj(call.get("function"), f"{where}.function")
    arguments = function.get("arguments", "")
    return pb.ToolCall(
        id=string(call.get("id", ""), f"{where}.id"),
        name=string(function.get("name", ""), f"{where}.function.name"),
        arguments=string(arguments, f"{where}.function.arguments"),
    )


def _message(value: Any, index: int) -> pb.Message:
    where = f"messages[{index}]"
    message = obj(value, where)
    role = message.get("role")
    if role not in _ROLES:
        raise InvalidRequest(
            f"{where}.role", "must be 'system', 'developer', 'user', 'assistant' or 'tool'"
        )
    calls = message.get("tool_calls") or []
    return pb.Message(
        role=_ROLES[role],
        content=_content(message.get("content"), f"{where}.content"),
        tool_calls=[
            _tool_call(c, f"{where}.tool_calls[{j}]")
            for j, c in enumerate(array(calls, f"{where}.tool_calls"))
        ],
        tool_call_id=string(message.get("tool_call_id", ""), f"{where}.tool_call_id"),
        name=string(message.get("name", ""), f"{where}.name"),
    )


def _tool(value: Any, index: int) -> pb.Tool:
    where = f"tools[{index}]"
    tool = obj(value, where)
    if tool.get("type") != "function":
        raise InvalidRequest(f"{where}.type", "must be 'function'")
    function = obj(tool.get("function"), f"{where}.function")
    parameters = function.get("parameters")
    if parameters is not None:
        obj(parameters, f"{where}.function.parameters")
    return pb.Tool(
        name=string(function.get("name", ""), f"{where}.function.name"),
        description=string(function.get("description", ""), f"{where}.function.description"),
        parameters_json=json.dumps(parameters) if parameters is not None else "",
    )


def _tool_choice(value: Any) -> str:
    if isinstance(value, str):
        if value not in ("auto", "none", "required"):
            raise InvalidRequest("tool_choice", "must be 'auto', 'none', 'required' or an object")
        return value
    choice = obj(value, "tool_choice")
    if choice.get("type") != "function":
        raise InvalidRequest("tool_choice.type", "must be 'function'")
    function = obj(choice.get("function"), "tool_choice.function")
    name = string(function.get("name"), "tool_choice.function.name")
    if not name:
        raise InvalidRequest("tool_choice.function.name", "is required")
    return name


def _response_format(value: Any) -> pb.ResponseFormat:
    fmt = obj(value, "response_format")
    kind = fmt.get("type")
    if kind not in _FORMATS:
        raise InvalidRequest(
            "response_format.type", "must be 'text', 'json_object' or 'json_schema'"
        )
    if kind != "json_schema":
        return pb.ResponseFormat(type=_FORMATS[kind])
    spec = obj(fmt.get("json_schema"), "response_format.json_schema")
    name = string(spec.get("name", ""), "response_format.json_schema.name")
    if not name:
        raise InvalidRequest("response_format.json_schema.name", "is required")
    schema = obj(spec.get("schema", {}), "response_format.json_schema.schema")
    strict = spec.get("strict")
    if strict is not None:
        strict = boolean(strict, "response_format.json_schema.strict")
    return pb.ResponseFormat(
        type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        schema_name=name,
        json_schema=json.dumps(schema),
        strict=bool(strict),
    )


def parse_chat(body: Any, headers: Mapping[str, str]) -> ChatCall:
    """Read a Chat Completions request (parsed JSON) and celgate's headers (lower-case names)."""
    body = obj(body, "body")
    unknown = sorted(set(body) - _KNOWN - _IGNORED)
    if unknown:
        raise InvalidRequest(unknown[0], "is not supported by celgate")
    model = string(body.get("model") or "", "model")
    request = pb.ChatStreamRequest(
        messages=[_message(m, i) for i, m in enumerate(array(body.get("messages"), "messages"))],
        preferred_model="" if model == AUTO_MODEL else model,
    )
    if body.get("n") not in (None, 1):
        raise InvalidRequest("n", "celgate returns one choice: n must be 1")
    if body.get("tools") is not None:
        request.tools.extend(_tool(t, i) for i, t in enumerate(array(body["tools"], "tools")))
    if body.get("tool_choice") is not None:
        request.tool_choice = _tool_choice(body["tool_choice"])
    if body.get("response_format") is not None:
        request.response_format.CopyFrom(_response_format(body["response_format"]))
    if body.get("temperature") is not None:
        request.temperature = number(body["temperature"], "temperature")
    if body.get("top_p") is not None:
        request.top_p = number(body["top_p"], "top_p")
    # max_completion_tokens is the current name; max_tokens the deprecated one.
    for key in ("max_tokens", "max_completion_tokens"):
        if body.get(key) is not None:
            request.max_tokens = integer(body[key], key)
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else array(stop, "stop")
        request.stop.extend(string(s, f"stop[{i}]") for i, s in enumerate(stops))
    inputs = celgate_inputs(body, headers)
    if "task_type" in inputs:
        request.task_type = inputs["task_type"]
    if "classification" in inputs:
        request.classification = inputs["classification"]
    request.labels.update(inputs["labels"])
    stream = boolean(body.get("stream", False), "stream") if "stream" in body else False
    include_usage = False
    if body.get("stream_options") is not None:
        options = obj(body["stream_options"], "stream_options")
        if "include_usage" in options:
            include_usage = boolean(options["include_usage"], "stream_options.include_usage")
    return ChatCall(request, model or AUTO_MODEL, stream, include_usage)


# -- answers ------------------------------------------------------------------------------------


def route_json(route: Route) -> dict[str, Any]:
    """The `celgate` member of an answer: which model answered, why, and at what cost."""
    return {
        "decision_id": route.decision_id,
        "model": route.model,
        "provider": route.provider,
        "upstream_model": route.upstream_model,
        "location": route.location,
        "rule": route.rule,
        "classification": route.classification.name,
        "cost_usd": route.cost_usd,
        "policy_name": route.policy_name,
        "policy_revision": route.policy_revision,
        "attempts": route.attempts,
        "rerouted": route.rerouted,
    }


def route_headers(route: Route) -> dict[str, str]:
    return {
        "x-celgate-decision-id": route.decision_id,
        "x-celgate-model": route.model,
        "x-celgate-rule": route.rule,
        "x-celgate-cost-usd": f"{route.cost_usd:.8f}",
    }


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _tool_calls_json(calls: tuple[ToolCall, ...], *, indexed: bool) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(calls):
        item: dict[str, Any] = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        if indexed:
            item["index"] = i
        out.append(item)
    return out


def completion_json(result: ChatResult, route: Route) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": result.content if result.content or not result.tool_calls else None,
        "refusal": None,
    }
    if result.tool_calls:
        message["tool_calls"] = _tool_calls_json(result.tool_calls, indexed=False)
    return {
        "id": f"chatcmpl-{route.decision_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": route.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": result.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage_json(result.usage),
        "celgate": route_json(route),
    }


class ChunkWriter:
    """Builds the `chat.completion.chunk` objects of one stream: the first carries the role,
    the one with the finish reason carries the route (and usage, as a last chunk with no
    choices, when the caller asked with `stream_options.include_usage`)."""

    def __init__(self, decision_id: str, model: str, include_usage: bool) -> None:
        self._id = f"chatcmpl-{decision_id}"
        self._created = int(time.time())
        self._model = model
        self._include_usage = include_usage
        self._first = True

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
            **extra,
        }

    def chunks(self, chunk: Chunk, route: Route | None) -> list[dict[str, Any]]:
        delta: dict[str, Any] = {}
        if self._first:
            delta["role"] = "assistant"
            self._first = False
        if chunk.content_delta:
            delta["content"] = chunk.content_delta
        if chunk.tool_calls:
            delta["tool_calls"] = _tool_calls_json(chunk.tool_calls, indexed=True)
        if route is not None:
            self._model = route.model
        out = []
        if delta or chunk.finish_reason is None:
            out.append(self._chunk([{"index": 0, "delta": delta, "finish_reason": None}]))
        if chunk.finish_reason is not None:
            extra: dict[str, Any] = {}
            if route is not None and not self._include_usage:
                extra["celgate"] = route_json(route)
            finish = {"index": 0, "delta": {}, "finish_reason": chunk.finish_reason}
            out.append(self._chunk([finish], **extra))
            if self._include_usage:
                usage = usage_json(chunk.usage or Usage())
                last: dict[str, Any] = {"usage": usage}
                if route is not None:
                    last["celgate"] = route_json(route)
                out.append(self._chunk([], **last))
        return out
