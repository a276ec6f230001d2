"""The request walk reads a dataclass's string, scalar and empty fields without recursing:
the (path, text) list stays the exact one, in field order, and a value of an unknown type
still fails closed wherever it sits (a new field, a sequence in a new field, a nested message).
"""

from __future__ import annotations

import dataclasses

import pytest

from gateway.chat import ChatMessage, ChatParams, ResponseFormat, ToolCall, ToolSpec
from gateway.inspect.parts import parts_list


class Opaque:
    """A type the walk does not know: it might serialize to text."""


@dataclasses.dataclass(frozen=True)
class Extended(ChatParams):
    extra: object = None
    notes: tuple[object, ...] = ()


@dataclasses.dataclass(frozen=True)
class TaggedMessage(ChatMessage):
    tag: object = ""


def test_paths_and_order_of_every_kind_of_field() -> None:
    params = Extended(
        messages=(
            ChatMessage(role="system", content="", name="ops"),
            TaggedMessage(
                role="assistant",
                tool_calls=(ToolCall("c1", "lookup", '{"q": 1}'),),
                tag="t",
            ),
        ),
        tools=(ToolSpec(name="lookup", parameters={"": {"k": ["a", 2, None, True]}, "e": {}}),),
        tool_choice="auto",
        response_format=ResponseFormat(type="json_schema", schema={}),
        temperature=0.5,
        max_tokens=10,
        stop=("", "END"),
        notes=((), [], {}, "n"),
    )
    assert parts_list(params) == [
        ("messages[0].role", "system"),
        ("messages[0].name", "ops"),
        ("messages[1].role", "assistant"),
        ("messages[1].tool_calls[0].id", "c1"),
        ("messages[1].tool_calls[0].name", "lookup"),
        ("messages[1].tool_calls[0].arguments", '{"q": 1}'),
        ("messages[1].tag", "t"),
        ("tools[0].name", "lookup"),
        ('tools[0].parameters[""]{"k"}', "k"),
        ('tools[0].parameters[""]["k"][0]', "a"),
        ('tools[0].parameters{"e"}', "e"),
        ("tool_choice", "auto"),
        ("response_format.type", "json_schema"),
        ("stop[1]", "END"),
        ("notes[3]", "n"),
    ]


@pytest.mark.parametrize(
    ("params", "path"),
    [
        (Extended(messages=(), extra=Opaque()), "extra"),
        (Extended(messages=(), extra=b"bytes"), "extra"),
        (Extended(messages=(), extra=3j), "extra"),
        (Extended(messages=(), notes=("ok", Opaque())), r"notes\[1\]"),
        (Extended(messages=(), notes=({"k": [Opaque()]},)), r'notes\[0\]\["k"\]\[0\]'),
        (
            ChatParams(messages=(ChatMessage(role="user"), TaggedMessage(role="user", tag=b"x"))),
            r"messages\[1\]\.tag",
        ),
    ],
)
def test_an_unknown_type_anywhere_fails_closed(params: ChatParams, path: str) -> None:
    with pytest.raises(TypeError, match=f"^{path}: cannot inspect"):
        parts_list(params)
