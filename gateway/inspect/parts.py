"""Every string a provider adapter may put in an upstream request, with its path.

Derived from the structure of `ChatParams`, not from a list: the walk recurses through
dataclass fields, tuples and lists, and dicts (JSON values: keys and values alike), so a field
added to `ChatParams` (or to a type it holds) is inspected without anyone remembering to add
it. A value of a type the walk does not know raises `TypeError`: the inspector fails closed
rather than skip something it cannot read.

Paths: `name` for a field, `[i]` for a sequence item, `["key"]` for a dict value (the key as a
JSON string), and `{"key"}` for the dict key itself (keys are sent upstream too, as JSON Schema
property names). Examples: `messages[2].content`, `messages[1].tool_calls[0].arguments`,
`tools[0].parameters["properties"]["card"]["default"]`, `response_format.schema_name`,
`stop[1]`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from functools import cache
from typing import Any

from gateway.chat import ChatParams

# Non-text leaves: numbers and flags carry no content a detector could read.
_SCALARS = (bool, int, float, type(None))


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def request_parts(params: ChatParams) -> Iterator[tuple[str, str]]:
    """(path, text) for every non-empty string in the request, in field order."""
    return _walk(params, "")


def _walk(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        if value:
            yield path, value
    elif isinstance(value, _SCALARS):
        return
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        prefix = f"{path}." if path else ""
        for name in _field_names(type(value)):
            yield from _walk(getattr(value, name), prefix + name)
    elif isinstance(value, tuple | list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path}: a dict key of type {type(key).__name__} is not JSON")
            quoted = json.dumps(key, ensure_ascii=False)
            if key:
                yield f"{path}{{{quoted}}}", key
            yield from _walk(item, f"{path}[{quoted}]")
    else:
        # Fail closed: an unknown type might carry text the adapters serialize.
        kind = type(value).__name__
        raise TypeError(f"{path or 'request'}: cannot inspect a value of type {kind}")


def part_text(params: ChatParams, path: str) -> str:
    """The text of the part at `path` (as `request_parts` names it); KeyError if none."""
    for candidate, text in request_parts(params):
        if candidate == path:
            return text
    raise KeyError(path)
