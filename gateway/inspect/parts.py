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
from collections.abc import Hashable, Iterator
from functools import cache
from typing import Any, cast

from gateway.chat import ChatParams

# Non-text leaves: numbers and flags carry no content a detector could read.
_SCALAR_TYPES = frozenset({bool, int, float, type(None)})
# Empty, these hold nothing to walk.
_CONTAINER_TYPES = frozenset({tuple, list, dict})


@cache
def _dataclass_fields(cls: Any) -> tuple[str, ...] | None:
    if not dataclasses.is_dataclass(cls):
        return None
    return tuple(f.name for f in dataclasses.fields(cls))


def request_parts(params: ChatParams) -> Iterator[tuple[str, str]]:
    """(path, text) for every non-empty string in the request, in field order."""
    return iter(parts_list(params))


def parts_list(params: ChatParams) -> list[tuple[str, str]]:
    """As `request_parts`, as a list (what the inspector builds its scan buffer from)."""
    out: list[tuple[str, str]] = []
    _walk(params, "", out)
    return out


def _walk(value: Any, path: str, out: list[tuple[str, str]]) -> None:
    # A plain recursive function appending to one list: ~4x faster than nested generators.
    kind = type(value)
    if kind is str:
        if value:
            out.append((path, value))
        return
    if kind in _SCALAR_TYPES:
        return
    names = _dataclass_fields(cast(Hashable, kind))
    if names is not None:
        _walk_fields(value, names, f"{path}." if path else "", out)
    elif kind is tuple or kind is list:
        for index, item in enumerate(value):
            _walk(item, f"{path}[{index}]", out)
    elif kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"{path}: a dict key of type {type(key).__name__} is not JSON")
            quoted = json.dumps(key, ensure_ascii=False)
            if key:
                out.append((f"{path}{{{quoted}}}", key))
            _walk(item, f"{path}[{quoted}]", out)
    elif isinstance(value, str):  # a str subclass (an enum value)
        if value:
            out.append((path, str(value)))
    else:
        # Fail closed: an unknown type might carry text the adapters serialize.
        raise TypeError(f"{path or 'request'}: cannot inspect a value of type {kind.__name__}")


def _walk_fields(
    value: Any, names: tuple[str, ...], prefix: str, out: list[tuple[str, str]]
) -> None:
    """A dataclass's fields, in order. Most fields of a request are strings, numbers, None or
    empty tuples: those are handled here, without a call to `_walk` (as `_walk` would)."""
    for name in names:
        item = getattr(value, name)
        kind = type(item)
        if kind is str:
            if item:
                out.append((prefix + name, item))
        elif kind in _SCALAR_TYPES or (kind in _CONTAINER_TYPES and not item):
            continue
        else:
            _walk(item, prefix + name, out)


def part_text(params: ChatParams, path: str) -> str:
    """The text of the part at `path` (as `request_parts` names it); KeyError if none."""
    for candidate, text in request_parts(params):
        if candidate == path:
            return text
    raise KeyError(path)
