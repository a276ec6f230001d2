"""JSON text from callers (tool schemas, response schemas), parsed with a bound on nesting.

Deep nesting is a cheap way to crash a parser or, further down, every serializer that walks
the value recursively (the inspector's normalizer, the HTTP clients' encoders). The standard
parser raises RecursionError around a thousand levels, and well below that a value can still
exhaust the stack of a recursive consumer; so callers' JSON is refused beyond
`limits.max_json_depth` levels with an error naming the limit, never the content.
"""

from __future__ import annotations

import json
from typing import Any


class JSONTextError(ValueError):
    """Not usable JSON; the message says why, without quoting the text."""


def depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, `{}` and `[]` are 1), iteratively:
    the check itself must not recurse."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        stack.extend((child, level) for child in children)
    return deepest


def loads_bounded(text: str, max_depth: int) -> Any:
    """Parse `text`; raise JSONTextError when it is not JSON or nests deeper than `max_depth`."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JSONTextError(f"is not valid JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:
        raise JSONTextError(
            f"is nested more than {max_depth} levels deep (limits.max_json_depth)"
        ) from None
    if depth(value) > max_depth:
        raise JSONTextError(f"is nested more than {max_depth} levels deep (limits.max_json_depth)")
    return value
