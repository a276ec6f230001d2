"""The policy's inputs as the decision log records them, and back.

A replay must give a candidate policy exactly what the live one saw: the `PolicyRequest`
(classification, detectors, task type, complexity, token estimate, tenant, labels, the
caller's hints), the `BudgetState` snapshot, which catalogue models were unhealthy and the
evaluation time. None of these hold content (the `PolicyRequest` proto is content-free by
design), so recording them keeps the decision log's promise.

Messages are written field by field from the descriptor (`ListFields`): a field added to the
proto is recorded without touching this module, enum values are written by name (stable when
numbers are not), and it costs ~5 us where `json_format.MessageToDict` costs ~25 us on every
request. Reading goes through `json_format`, which accepts both, off the request path.

`INPUTS_VERSION` is the decision-log format that carries these inputs; a line without a
`version` is format 1 (written before the inputs were recorded).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from gateway.inspect.inspector import Inspector
from gateway.levels import Level
from gateway.v1 import policy_pb2

# Format 1: no `version`, no policy inputs. Format 2: `version`, `policy_inputs`, `route`,
# `usage` and `shadow`. Readers accept every older format.
INPUTS_VERSION = 2

_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def message_dict(message: Message) -> dict[str, Any]:
    """A proto message as a JSON-ready dict: set fields only, enums by name."""
    out: dict[str, Any] = {}
    for descriptor, value in message.ListFields():
        out[descriptor.name] = _value(descriptor, value)
    return out


def _value(descriptor: FieldDescriptor, value: Any) -> Any:
    if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
        value_field = descriptor.message_type.fields_by_name["value"]
        return {str(k): _scalar(value_field, v) for k, v in value.items()}
    if descriptor.is_repeated:
        return [_scalar(descriptor, v) for v in value]
    return _scalar(descriptor, value)


def _scalar(descriptor: FieldDescriptor, value: Any) -> Any:
    enum = descriptor.enum_type
    if enum is not None:
        number = int(value)
        known = enum.values_by_number.get(number)
        return known.name if known is not None else number
    if descriptor.type == _MESSAGE:
        return message_dict(value)
    return value


# Names the detector that found something sensitive in a text, or None.
Withhold = Callable[[str], str | None]


def encode(
    request: policy_pb2.PolicyRequest,
    budget: policy_pb2.BudgetState,
    models: Mapping[str, policy_pb2.ModelInfo],
    now: datetime,
    *,
    withhold: Withhold | None = None,
) -> dict[str, Any]:
    """The `policy_inputs` of a decision-log line. The catalogue itself comes from the
    configuration at replay time; only its health is a per-request fact.

    Labels are the one caller-written text the policy sees. They are meant for routing and
    budgets (`team: search`), but a caller could put anything there, so a label whose key or
    value `withhold` flags is recorded as `<withheld: detector>` (the key as `<withheld N>`):
    the decision log never holds a value the inspection treats as sensitive."""
    recorded = message_dict(request)
    if withhold is not None and request.labels:
        recorded["labels"] = _labels(request.labels, withhold)
    return {
        "request": recorded,
        "budget": message_dict(budget),
        "unhealthy": [alias for alias, info in models.items() if not info.healthy],
        "now": now.astimezone(UTC).isoformat(timespec="microseconds"),
    }


def label_guard(inspector: Inspector) -> Withhold:
    """`withhold` backed by the pattern tier: any finding above PUBLIC, or a failed scan."""

    def withhold(text: str) -> str | None:
        try:
            findings = inspector.findings_in(text)
        except Exception:
            return "inspection_failed"  # fail closed: unknown means not recorded
        for finding in findings:
            if finding.level > Level.PUBLIC:
                return finding.detector
        return None

    return withhold


def _labels(labels: Mapping[str, str], withhold: Withhold) -> dict[str, str]:
    out: dict[str, str] = {}
    for position, (key, value) in enumerate(sorted(labels.items()), 1):
        in_key = withhold(key)
        found = in_key or withhold(value)
        if found is None:
            out[key] = value
        else:
            out[key if in_key is None else f"<withheld {position}>"] = f"<withheld: {found}>"
    return out


class InputsError(ValueError):
    """A recorded `policy_inputs` object that cannot be read back; the message names the
    field."""


@dataclass(frozen=True, slots=True)
class PolicyInputs:
    request: policy_pb2.PolicyRequest
    budget: policy_pb2.BudgetState
    unhealthy: frozenset[str]
    now: datetime


def decode(data: Any) -> PolicyInputs:
    """Read back what `encode` wrote. Unknown fields (from a newer gateway) are ignored, so a
    replay tool older than the log still reads it."""
    if not isinstance(data, dict):
        raise InputsError(f"policy_inputs: expected an object, got {type(data).__name__}")
    request = _parse(data.get("request") or {}, policy_pb2.PolicyRequest(), "request")
    budget = _parse(data.get("budget") or {}, policy_pb2.BudgetState(), "budget")
    unhealthy = data.get("unhealthy") or []
    if not isinstance(unhealthy, list) or not all(isinstance(a, str) for a in unhealthy):
        raise InputsError("policy_inputs.unhealthy: expected a list of model aliases")
    return PolicyInputs(request, budget, frozenset(unhealthy), parse_time(data.get("now"), "now"))


def _parse(value: Any, message: Message, name: str) -> Any:
    if not isinstance(value, dict):
        raise InputsError(f"policy_inputs.{name}: expected an object, got {type(value).__name__}")
    try:
        return json_format.ParseDict(value, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise InputsError(f"policy_inputs.{name}: {exc}") from None


def parse_time(value: Any, name: str) -> datetime:
    """An RFC 3339 time as the decision log writes it (UTC when no offset is given)."""
    if not isinstance(value, str):
        raise InputsError(f"{name}: expected an RFC 3339 time string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputsError(f"{name}: {value!r} is not an RFC 3339 time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
