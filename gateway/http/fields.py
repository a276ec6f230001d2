"""Reading parsed JSON request bodies: typed field readers that raise `InvalidRequest` naming
the field and the kind of value found (never the value), and celgate's own inputs, which both
HTTP wire formats accept the same way (a `celgate` body member or `x-celgate-*` headers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.errors import InvalidRequest
from gateway.v1 import policy_pb2

HEADER_TASK_TYPE = "x-celgate-task-type"
HEADER_CLASSIFICATION = "x-celgate-classification"
HEADER_LABELS = "x-celgate-labels"


def kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(where, f"must be a string, not {kind(value)}")
    return value


def obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(where, f"must be an object, not {kind(value)}")
    return value


def array(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidRequest(where, f"must be an array, not {kind(value)}")
    return value


def number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(where, f"must be a number, not {kind(value)}")
    return float(value)


def integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(where, f"must be an integer, not {kind(value)}")
    if not -(2**31) <= value < 2**31:
        raise InvalidRequest(where, "is out of range")
    return value


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(where, f"must be true or false, not {kind(value)}")
    return value


def enum_value(value: Any, enum: Any, prefix: str, where: str) -> int:
    name = string(value, where).strip().upper()
    try:
        number = int(enum.Value(prefix + name))
    except ValueError:
        known = ", ".join(n.removeprefix(prefix).lower() for n in enum.keys()[1:])
        raise InvalidRequest(where, f"must be one of: {known}") from None
    if number == 0:
        raise InvalidRequest(where, f"must be one of the named values, not {name.lower()!r}")
    return number


def string_map(value: Any, where: str) -> dict[str, str]:
    labels = obj(value, where)
    return {key: string(item, f"{where}.{key}") for key, item in labels.items()}


def header_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key.strip():
            raise InvalidRequest(HEADER_LABELS, "must be 'key=value' pairs separated by commas")
        labels[key.strip()] = value.strip()
    return labels


def celgate_inputs(body: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """celgate's own inputs from the `celgate` body member (the OpenAI SDKs' `extra_body`) or
    `x-celgate-*` headers. Where both set one, they must agree."""
    extra = obj(body.get("celgate", {}), "celgate")
    unknown = sorted(set(extra) - {"task_type", "classification", "labels"})
    if unknown:
        raise InvalidRequest(f"celgate.{unknown[0]}", "is not a celgate input")
    found: dict[str, Any] = {}
    sources = (
        ("task_type", HEADER_TASK_TYPE, policy_pb2.TaskType, "TASK_TYPE_"),
        ("classification", HEADER_CLASSIFICATION, policy_pb2.Classification, "CLASSIFICATION_"),
    )
    for key, header, enum, prefix in sources:
        values = []
        if key in extra:
            values.append(enum_value(extra[key], enum, prefix, f"celgate.{key}"))
        if header in headers:
            values.append(enum_value(headers[header], enum, prefix, header))
        if len(set(values)) > 1:
            raise InvalidRequest(f"celgate.{key}", f"disagrees with the {header} header")
        if values:
            found[key] = values[0]
    labels = header_labels(headers[HEADER_LABELS]) if HEADER_LABELS in headers else {}
    if "labels" in extra:
        for key, value in string_map(extra["labels"], "celgate.labels").items():
            if labels.get(key, value) != value:
                raise InvalidRequest(f"celgate.labels.{key}", "disagrees with x-celgate-labels")
            labels[key] = value
    found["labels"] = labels
    return found
