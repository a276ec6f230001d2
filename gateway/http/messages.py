"""Anthropic's Messages wire format <-> celgate's request and answer.

Protocol mapping only, like chat_completions.py: the body is read into the API's
`ChatStreamRequest` and handed to the same translation and validation as gRPC. Anthropic's
content blocks map onto celgate's messages: `system` becomes a system message, `tool_use` blocks
an assistant's tool calls, each `tool_result` block a tool message (in the order the blocks
came). Problems raise `InvalidRequest` naming the JSON field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.chat import ChatResult, Chunk, Route, ToolCall, Usage
from gateway.errors import InvalidRequest
from gateway.http.chat_completions import AUTO_MODEL, ChatCall, route_json
from gateway.http.fields import array, boolean, celgate_inputs, integer, number, obj, string
from gateway.v1 import gateway_pb2 as pb

_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
_IGNORED = frozenset({"metadata", "service_tier"})
_KNOWN = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "temperature",
        "top_p",
        "stop_sequences",
        "stream",
        "celgate",
    }
)


def _text_blocks(value: Any, where: str) -> str:
    """A string, or an array of `text` blocks joined by newlines."""
    if isinstance(value, str):
        return value
    parts = []
    for j, block in enumerate(array(value, where)):
        block = obj(block, f"{where}[{j}]")
        if block.get("type") != "text":
            raise InvalidRequest(f"{where}[{j}].type", "only 'text' blocks are supported here")
        parts.append(string(block.get("text"), f"{where}[{j}].text"))
    return "\n".join(parts)


def _messages(value: Any, index: int) -> list[pb.Message]:
    """One Anthropic message as one or more celgate messages."""
    where = f"messages[{index}]"
    message = obj(value, where)
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise InvalidRequest(f"{where}.role", "must be 'user' or 'assistant'")
    pb_role = pb.ROLE_USER if role == "user" else pb.ROLE_ASSISTANT
    content = message.get("content")
    if isinstance(content, str):
        return [pb.Message(role=pb_role, content=content)]
    out: list[pb.Message] = []
    texts: list[str] = []
    calls: list[pb.ToolCall] = []
    for j, block in enumerate(array(content, f"{where}.content")):
        at = f"{where}.content[{j}]"
        block = obj(block, at)
        kind = block.get("type")
        if kind == "text":
            texts.append(string(block.get("text"), f"{at}.text"))
        elif kind == "tool_use" and role == "assistant":
            arguments = obj(block.get("input", {}), f"{at}.input")
            calls.append(
                pb.ToolCall(
                    id=string(block.get("id", ""), f"{at}.id"),
                    name=string(block.get("name", ""), f"{at}.name"),
                    arguments=json.dumps(arguments),
                )
            )
        elif kind == "tool_result" and role == "user":
            result = block.get("content", "")
            out.append(
                pb.Message(
                    role=pb.ROLE_TOOL,
                    tool_call_id=string(block.get("tool_use_id", ""), f"{at}.tool_use_id"),
                    content=_text_blocks(result, f"{at}.content"),
                )
            )
        else:
            allowed = "'text', 'tool_use'" if role == "assistant" else "'text', 'tool_result'"
            raise InvalidRequest(f"{at}.type", f"must be {allowed} in a {role} message")
    if texts or calls:
        out.append(pb.Message(role=pb_role, content="\n".join(texts), tool_calls=calls))
    return out


def _tool(value: Any, index: int) -> pb.Tool:
    where = f"tools[{index}]"
    tool = obj(value, where)
    if tool.get("type", "custom") != "custom":
        raise InvalidRequest(f"{where}.type", "only client tools (type 'custom') are supported")
    schema = obj(tool.get("input_schema"), f"{where}.input_schema")
    return pb.Tool(
        name=string(tool.get("name", ""), f"{where}.name"),
        description=string(tool.get("description", ""), f"{where}.description"),
        parameters_json=json.dumps(schema),
    )


def _tool_choice(value: Any) -> str:
    choice = obj(value, "tool_choice")
    kind = choice.get("type")
    if kind == "tool":
        return string(choice.get("name"), "tool_choice.name")
    mapped = {"auto": "auto", "any": "required", "none": "none"}.get(str(kind))
    if mapped is None:
        raise InvalidRequest("tool_choice.type", "must be 'auto', 'any', 'tool' or 'none'")
    return mapped


def parse_messages(body: Any, headers: Mapping[str, str]) -> ChatCall:
    """Read a Messages request (parsed JSON) and celgate's headers."""
    body = obj(body, "body")
    unknown = sorted(set(body) - _KNOWN - _IGNORED)
    if unknown:
        raise InvalidRequest(unknown[0], "is not supported by celgate")
    model = string(body.get("model") or "", "model")
    if "max_tokens" not in body:
        raise InvalidRequest("max_tokens", "is required")
    messages: list[pb.Message] = []
    if body.get("system") is not None:
        system = _text_blocks(body["system"], "system")
        messages.append(pb.Message(role=pb.ROLE_SYSTEM, content=system))
    for i, message in enumerate(array(body.get("messages"), "messages")):
        messages.extend(_messages(message, i))
    request = pb.ChatStreamRequest(
        messages=messages,
        preferred_model="" if model == AUTO_MODEL else model,
        max_tokens=integer(body["max_tokens"], "max_tokens"),
    )
    if body.get("tools") is not None:
        request.tools.extend(_tool(t, i) for i, t in enumerate(array(body["tools"], "tools")))
    if body.get("tool_choice") is not None:
        request.tool_choice = _tool_choice(body["tool_choice"])
    if body.get("temperature") is not None:
        temperature = number(body["temperature"], "temperature")
        if not 0.0 <= temperature <= 1.0:  # Anthropic's range, narrower than OpenAI's
            raise InvalidRequest("temperature", "must be between 0 and 1")
        request.temperature = temperature
    if body.get("top_p") is not None:
        request.top_p = number(body["top_p"], "top_p")
    if body.get("stop_sequences") is not None:
        stops = array(body["stop_sequences"], "stop_sequences")
        request.stop.extend(string(s, f"stop_sequences[{i}]") for i, s in enumerate(stops))
    inputs = celgate_inputs(body, headers)
    if "task_type" in inputs:
        request.task_type = inputs["task_type"]
    if "classification" in inputs:
        request.classification = inputs["classification"]
    request.labels.update(inputs["labels"])
    stream = boolean(body["stream"], "stream") if "stream" in body else False
    return ChatCall(request, model or AUTO_MODEL, stream, include_usage=True)


# -- answers ------------------------------------------------------------------------------------


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
        "cache_creation_input_tokens": 0,
    }


def _tool_use(call: ToolCall) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments or "{}")
    except json.JSONDecodeError:
        arguments = {}
    if not isinstance(arguments, dict):
        arguments = {"value": arguments}
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


def message_json(result: ChatResult, route: Route) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if result.content:
        content.append({"type": "text", "text": result.content})
    content += [_tool_use(call) for call in result.tool_calls]
    return {
        "id": f"msg_{route.decision_id}",
        "type": "message",
        "role": "assistant",
        "model": route.model,
        "content": content,
        "stop_reason": _STOP.get(result.finish_reason, "end_turn"),
        "stop_sequence": None,
        "usage": _usage(result.usage),
        "celgate": route_json(route),
    }


class EventWriter:
    """The server-sent events of one streamed message: message_start, per block
    content_block_start / _delta / _stop, then message_delta (stop reason, usage, and celgate's
    route) and message_stop."""

    def __init__(self, decision_id: str, model: str) -> None:
        self._id = f"msg_{decision_id}"
        self._model = model
        self._started = False
        self._block: int = -1
        self._text_open = False

    def _start(self) -> list[tuple[str, dict[str, Any]]]:
        self._started = True
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(Usage()),
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _close_text(self) -> list[tuple[str, dict[str, Any]]]:
        if not self._text_open:
            return []
        self._text_open = False
        return [("content_block_stop", {"type": "content_block_stop", "index": self._block})]

    def events(self, chunk: Chunk, route: Route | None) -> list[tuple[str, dict[str, Any]]]:
        out = [] if self._started else self._start()
        if chunk.content_delta:
            if not self._text_open:
                self._block += 1
                self._text_open = True
                block = {"type": "text", "text": ""}
                out.append(
                    (
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": self._block,
                            "content_block": block,
                        },
                    )
                )
            delta = {"type": "text_delta", "text": chunk.content_delta}
            out.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": self._block, "delta": delta},
                )
            )
        for call in chunk.tool_calls:
            out += self._close_text()
            self._block += 1
            start = {**_tool_use(call), "input": {}}
            json_delta = {"type": "input_json_delta", "partial_json": call.arguments or "{}"}
            out += [
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": self._block, "content_block": start},
                ),
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": self._block, "delta": json_delta},
                ),
                ("content_block_stop", {"type": "content_block_stop", "index": self._block}),
            ]
        if chunk.finish_reason is not None:
            out += self._close_text()
            usage = chunk.usage or Usage()
            final: dict[str, Any] = {
                "type": "message_delta",
                "delta": {
                    "stop_reason": _STOP.get(chunk.finish_reason, "end_turn"),
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": usage.output_tokens, "input_tokens": usage.input_tokens},
            }
            if route is not None:
                final["celgate"] = route_json(route)
            out += [("message_delta", final), ("message_stop", {"type": "message_stop"})]
        return out


def error_json(kind: str, message: str, detail: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's error shape, with celgate's detail beside it."""
    return {"type": "error", "error": {"type": kind, "message": message}, "celgate": detail}
