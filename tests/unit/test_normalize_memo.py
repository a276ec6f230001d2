"""One inspection normalizes each text once (`normalize.Memo`), piece by piece: the token
estimate's text and the task cues' texts are exactly the normalization of the joined text,
including at the seams between pieces (a combining mark, an invisible character or a
full-width digit at the start or end of a message)."""

from __future__ import annotations

import pytest

from gateway.chat import ChatMessage, ChatParams, ToolCall
from gateway.inspect import normalize as n
from gateway.inspect import segments

PIECES = [
    "plain ascii",
    "\u0301starts with a combining acute",
    "ends with a keycap 4\u20e3",
    "zero\u200bwidth and soft\u00adhyphen",
    "full-width \uff14\uff11\uff11\uff11",
    "\U000e0041\U000e0042 tag characters",
    "caf\u00e9 \u2013 \u201cquoted\u201d \u2014 \u00bd",
    "\ufb01 ligature and \u202eRLO",
    "",
]


def request(pieces: list[str]) -> ChatParams:
    return ChatParams(
        messages=(
            ChatMessage(role="system", content=pieces[0], name=pieces[1]),
            ChatMessage(role="system", content=pieces[2]),
            ChatMessage(role="user", content=pieces[3]),
            ChatMessage(
                role="assistant",
                content=pieces[4],
                tool_calls=(ToolCall("c1", pieces[5], pieces[6]), ToolCall("c2", "", "")),
            ),
            ChatMessage(role="user", content=pieces[7] + pieces[8]),
        )
    )


def joined_then_normalized(params: ChatParams) -> tuple[str, tuple[str, str]]:
    """What the texts were before the memo: joined first, normalized once."""
    pieces: list[str] = []
    for m in params.messages:
        pieces += [m.name] if m.name else []
        pieces += [m.content] if m.content else []
        for call in m.tool_calls:
            pieces += [call.name, call.arguments]
    system = "\n".join(m.content for m in params.messages if m.role == "system" and m.content)
    user = next(m.content for m in reversed(params.messages) if m.role == "user")
    return n.normalize(n.SEPARATOR.join(pieces)), (n.normalize(user), n.normalize(system))


@pytest.mark.parametrize("shift", range(len(PIECES)))
def test_piecewise_normalization_equals_normalizing_the_joined_text(shift: int) -> None:
    params = request(PIECES[shift:] + PIECES[:shift])
    memo = n.Memo()
    # The scan buffer fills the memo first, as in the inspector.
    segments.buffer([("p", m.content) for m in params.messages], memo)
    text, instructions = joined_then_normalized(params)
    assert n.request_text(params, memo) == text
    assert n.instruction_text(params, memo) == instructions
    assert n.request_text(params) == text
    assert n.instruction_text(params) == instructions


def test_memo_translates_each_text_once_and_passes_ascii_through() -> None:
    memo = n.Memo()
    text = "caf\u00e9 \uff11"
    first = memo(text)
    assert first == n.normalize(text) == "café 1"
    assert memo(text) is first
    ascii_text = "no change"
    assert memo(ascii_text) is ascii_text
