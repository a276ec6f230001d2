"""Translation between the gRPC API's protos and the pipeline's plain values (gateway/chat.py),
with validation: the only module that knows both. Another surface (HTTP JSON) maps its own wire
format to the same values, and its validation should name fields the same way.

Every problem raises `InvalidRequest` naming the field (`messages[2].role`) and what to fix;
messages never quote the caller's content.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.chat import (
    ChatMessage,
    ChatParams,
    ChatRequest,
    ChatResult,
    Chunk,
    ResponseFormat,
    ResponseFormatType,
    Role,
    ToolCall,
    ToolSpec,
    Usage,
)
from gateway.config import LimitsConfig
from gateway.errors import InvalidRequest
from gateway.jsontext import JSONTextError, loads_bounded
from gateway.levels import Level
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import policy_pb2

if TYPE_CHECKING:
    from gateway.chat import Route
    from gateway.pipeline import Plan

# The three request messages share field names and numbers (see gateway.proto).
AnyChatRequest = pb.ChatRequest | pb.ChatStreamRequest | pb.RouteRequest

_ROLES: dict[int, Role] = {
    pb.ROLE_SYSTEM: "system",
    pb.ROLE_USER: "user",
    pb.ROLE_ASSISTANT: "assistant",
    pb.ROLE_TOOL: "tool",
}
_FORMATS: dict[int, ResponseFormatType] = {
    pb.RESPONSE_FORMAT_TYPE_TEXT: "text",
    pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT: "json_object",
    pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: "json_schema",
}
_FINISH = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "tool_calls": pb.FINISH_REASON_TOOL_CALLS,
    "content_filter": pb.FINISH_REASON_CONTENT_FILTER,
}


_LOCATIONS = {"on_prem": policy_pb2.LOCATION_ON_PREM, "cloud": policy_pb2.LOCATION_CLOUD}


def _json_object(text: str, where: str, limits: LimitsConfig) -> dict[str, Any]:
    try:
        value = loads_bounded(text, limits.max_json_depth)
    except JSONTextError as exc:
        raise InvalidRequest(where, str(exc)) from None
    if not isinstance(value, dict):
        raise InvalidRequest(where, f"must be a JSON object, not {type(value).__name__}")
    return value


def _message(msg: pb.Message, index: int, limits: LimitsConfig) -> ChatMessage:
    where = f"messages[{index}]"
    role = _ROLES.get(msg.role)
    if role is None:
        raise InvalidRequest(
            f"{where}.role", "must be ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL"
        )
    if len(msg.content) > limits.max_message_chars:
        raise InvalidRequest(
            f"{where}.content",
            f"has {len(msg.content)} characters; the limit is {limits.max_message_chars}",
        )
    if msg.tool_calls and role != "assistant":
        raise InvalidRequest(f"{where}.tool_calls", "only assistant messages carry tool calls")
    if role == "tool" and not msg.tool_call_id:
        raise InvalidRequest(
            f"{where}.tool_call_id", "a tool message must name the call it answers"
        )
    calls = []
    for j, call in enumerate(msg.tool_calls):
        if not call.name:
            raise InvalidRequest(f"{where}.tool_calls[{j}].name", "is required")
        calls.append(ToolCall(id=call.id, name=call.name, arguments=call.arguments or "{}"))
    if not msg.content and not calls:
        raise InvalidRequest(f"{where}.content", "is empty")
    return ChatMessage(
        role=role,
        content=msg.content,
        tool_calls=tuple(calls),
        tool_call_id=msg.tool_call_id,
        name=msg.name,
    )


def _response_format(fmt: pb.ResponseFormat, limits: LimitsConfig) -> ResponseFormat | None:
    if fmt.type == pb.RESPONSE_FORMAT_TYPE_UNSPECIFIED:
        return None
    kind = _FORMATS.get(fmt.type)
    if kind is None:
        raise InvalidRequest("response_format.type", "must be TEXT, JSON_OBJECT or JSON_SCHEMA")
    if kind != "json_schema":
        return ResponseFormat(type=kind)
    if not fmt.schema_name:
        raise InvalidRequest("response_format.schema_name", "is required for JSON_SCHEMA")
    schema = _json_object(fmt.json_schema, "response_format.json_schema", limits)
    return ResponseFormat(
        type="json_schema", schema_name=fmt.schema_name, schema=schema, strict=fmt.strict
    )


def to_chat_request(
    request: AnyChatRequest, limits: LimitsConfig, *, tenant: str, streaming: bool
) -> ChatRequest:
    """Validate a Chat, ChatStream or Route request and translate it."""
    if not request.messages:
        raise InvalidRequest("messages", "at least one message is required")
    if len(request.messages) > limits.max_messages:
        raise InvalidRequest(
            "messages", f"has {len(request.messages)} entries; the limit is {limits.max_messages}"
        )
    messages = tuple(_message(m, i, limits) for i, m in enumerate(request.messages))
    total = sum(len(m.content) for m in messages)
    if total > limits.max_total_chars:
        raise InvalidRequest(
            "messages", f"hold {total} characters in all; the limit is {limits.max_total_chars}"
        )
    if len(request.tools) > limits.max_tools:
        raise InvalidRequest(
            "tools", f"has {len(request.tools)} entries; the limit is {limits.max_tools}"
        )
    tools = []
    for i, tool in enumerate(request.tools):
        if not tool.name:
            raise InvalidRequest(f"tools[{i}].name", "is required")
        parameters = (
            _json_object(tool.parameters_json, f"tools[{i}].parameters_json", limits)
            if tool.parameters_json
            else {"type": "object", "properties": {}}
        )
        tools.append(ToolSpec(name=tool.name, description=tool.description, parameters=parameters))
    if request.HasField("temperature") and not 0.0 <= request.temperature <= 2.0:
        raise InvalidRequest("temperature", "must be between 0 and 2")
    if request.HasField("top_p") and not 0.0 < request.top_p <= 1.0:
        raise InvalidRequest("top_p", "must be greater than 0 and at most 1")
    if request.HasField("max_tokens") and request.max_tokens <= 0:
        raise InvalidRequest("max_tokens", "must be positive")
    if request.task_type not in policy_pb2.TaskType.values():
        raise InvalidRequest("task_type", "is not a known TaskType")
    declared: Level | None = None
    if request.classification:
        try:
            declared = Level(request.classification)
        except ValueError:
            raise InvalidRequest("classification", "is not a known Classification") from None
    params = ChatParams(
        messages=messages,
        tools=tuple(tools),
        tool_choice=request.tool_choice or None,
        response_format=_response_format(request.response_format, limits),
        temperature=request.temperature if request.HasField("temperature") else None,
        top_p=request.top_p if request.HasField("top_p") else None,
        max_tokens=request.max_tokens if request.HasField("max_tokens") else None,
        stop=tuple(request.stop),
    )
    return ChatRequest(
        params=params,
        tenant=tenant,
        task_hint=request.task_type,
        declared=declared,
        preferred_model=request.preferred_model,
        labels=dict(request.labels),
        streaming=streaming,
    )


def usage_pb(usage: Usage) -> pb.Usage:
    return pb.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        reasoning_tokens=usage.reasoning_tokens,
    )


def tool_calls_pb(calls: tuple[ToolCall, ...]) -> list[pb.ToolCall]:
    return [pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in calls]


def route_info_pb(route: Route) -> pb.RouteInfo:
    return pb.RouteInfo(
        model=route.model,
        provider=route.provider,
        upstream_model=route.upstream_model,
        location=_LOCATIONS[route.location],
        rule=route.rule,
        classification=route.classification.proto(),
        cost_usd=route.cost_usd,
        policy_name=route.policy_name,
        policy_revision=route.policy_revision,
        decision_id=route.decision_id,
        attempts=route.attempts,
        rerouted=route.rerouted,
        redacted=dict(route.redacted),
    )


def chat_response_pb(result: ChatResult, route: Route) -> pb.ChatResponse:
    return pb.ChatResponse(
        content=result.content,
        tool_calls=tool_calls_pb(result.tool_calls),
        finish_reason=_FINISH.get(result.finish_reason, pb.FINISH_REASON_UNSPECIFIED),
        usage=usage_pb(result.usage),
        route=route_info_pb(route),
    )


def route_response_pb(plan: Plan, route: Route) -> pb.RouteResponse:
    """The dry run's answer: the route, the policy's decision and input, what was detected
    and every candidate with why it was kept or dropped."""
    candidates = [
        pb.Candidate(model=m, allowed=True, redacted=m in plan.redactions) for m in plan.chain
    ]
    candidates += [
        pb.Candidate(model=d.model, allowed=False, reason=d.reason) for d in plan.dropped
    ]
    findings = [
        pb.Finding(detector=f.detector, level=f.level.proto(), count=f.count)
        for f in plan.inspection.findings
    ]
    return pb.RouteResponse(
        route=route_info_pb(route),
        decision=plan.decision,
        context=plan.context,
        findings=findings,
        candidates=candidates,
    )


def stream_response_pb(chunk: Chunk, route: Route | None) -> pb.ChatStreamResponse:
    out = pb.ChatStreamResponse(
        content_delta=chunk.content_delta, tool_calls=tool_calls_pb(chunk.tool_calls)
    )
    if chunk.finish_reason is not None:
        out.finish_reason = _FINISH.get(chunk.finish_reason, pb.FINISH_REASON_UNSPECIFIED)
    if chunk.usage is not None:
        out.usage.CopyFrom(usage_pb(chunk.usage))
    if route is not None:
        out.route.CopyFrom(route_info_pb(route))
    return out
