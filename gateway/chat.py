"""The chat data model every layer shares: the request the pipeline takes, the normalized
messages, tools and parameters the provider adapters translate, and the answer they return.

Plain frozen dataclasses with no transport types: `convert.py` maps the gRPC protos to and from
them, and any other surface (an HTTP API) maps its own wire format to the same values. See
docs/architecture.md, "Where each fact lives".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.levels import Level

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]
ResponseFormatType = Literal["text", "json_object", "json_schema"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model produced it


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)  # JSON Schema


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    type: ResponseFormatType
    schema_name: str = ""
    schema: dict[str, Any] | None = None
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ChatParams:
    """One chat request, provider-neutral. The model is chosen separately."""

    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str | None = None  # "auto", "none", "required" or a tool name
    response_format: ResponseFormat | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0  # part of input_tokens, when the provider reports it
    reasoning_tokens: int = 0  # part of output_tokens, when the provider reports it


@dataclass(frozen=True, slots=True)
class ChatResult:
    content: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: FinishReason
    usage: Usage
    response_model: str  # the model id the upstream says answered
    response_id: str = ""  # the upstream's completion id, when it sends one


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a streamed answer. Tool calls are assembled by the adapter and arrive
    complete; the last chunk carries `finish_reason` and `usage`."""

    content_delta: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    response_model: str = ""
    response_id: str = ""  # the upstream's completion id (on the last chunk), when it sends one


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One validated request as the pipeline takes it, whatever surface it came through."""

    params: ChatParams
    tenant: str = "default"
    task_hint: int = 0  # a gateway.v1.TaskType value (the policy's enum); 0 = infer
    declared: Level | None = None  # the caller's declared classification
    preferred_model: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    streaming: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """Which model answered (or, for the dry run, would answer), why, and at what cost: what a
    surface reports back with the answer (gRPC's RouteInfo)."""

    model: str
    provider: str
    upstream_model: str
    location: str  # on_prem or cloud
    rule: str
    classification: Level
    cost_usd: float
    policy_name: str
    policy_revision: str
    decision_id: str
    attempts: int  # upstream calls made; 0 for the dry run
    rerouted: bool
    # (detector id, distinct values replaced) when the model got the request redacted.
    redacted: tuple[tuple[str, int], ...] = ()
