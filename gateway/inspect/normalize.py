"""Text normalization run before detection, and how a request becomes one scannable buffer.

Normalization undoes the cheap evasions that keep a value readable to a model while hiding it
from a byte matcher: compatibility forms (full-width digits, ligatures, circled digits,
non-breaking spaces) via NFKC, invisible characters (zero-width spaces and joiners, soft
hyphens, bidi controls, variation selectors), Unicode dashes, and Unicode tag characters (which
smuggle ASCII text invisibly; they are decoded back to the ASCII they encode).
"""

from __future__ import annotations

import json
import re
import unicodedata

from gateway.chat import ChatMessage, ChatParams

# Messages are joined by one space: a value whose digit groups are split across two messages
# ("4111 1111" + "1111 1111") reads exactly as if the user had typed the separator, so it is
# found; nothing is glued together that no message contains, so no word is invented at a seam.
SEPARATOR = " "

_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e001f\U000e007f]"
)
# Tag characters U+E0020..U+E007E mirror printable ASCII.
_TAGS = re.compile("[\U000e0020-\U000e007e]+")
_DASHES = re.compile("[\u2010-\u2015\u2212\ufe58\ufe63\uff0d]")


def _untag(match: re.Match[str]) -> str:
    return "".join(chr(ord(ch) - 0xE0000) for ch in match.group())


def normalize(text: str) -> str:
    """NFKC, invisible characters removed, tags decoded, dashes unified. ASCII is unchanged."""
    if text.isascii():
        return text
    text = _INVISIBLE.sub("", text)
    text = _TAGS.sub(_untag, text)
    text = unicodedata.normalize("NFKC", text)
    return _DASHES.sub("-", text)


def _json_text(text: str) -> str:
    """Tool arguments and results are JSON; `\\u0040`-style escapes would hide a value from the
    matcher, so escaped JSON is re-serialized with real characters. Non-JSON stays as is."""
    if "\\u" not in text:
        return text
    try:
        return json.dumps(json.loads(text), ensure_ascii=False)
    except (ValueError, RecursionError):
        return text


def message_segments(message: ChatMessage) -> list[str]:
    """Every piece of text a message carries, in the order a reader meets it."""
    parts: list[str] = []
    if message.name:
        parts.append(message.name)
    if message.content:
        parts.append(_json_text(message.content) if message.role == "tool" else message.content)
    for call in message.tool_calls:
        parts.append(call.name)
        parts.append(_json_text(call.arguments))
    return parts


def request_text(params: ChatParams) -> str:
    """The whole conversation (every role, tool calls included), normalized, as one string."""
    segments: list[str] = []
    for message in params.messages:
        segments.extend(message_segments(message))
    return normalize(SEPARATOR.join(segment for segment in segments if segment))


def instruction_text(params: ChatParams) -> tuple[str, str]:
    """(last user message, system messages), normalized: what the caller asks for. Assistant
    history and tool results are data, not instructions, so they do not set the task type."""
    user = ""
    for message in reversed(params.messages):
        if message.role == "user":
            user = message.content
            break
    system = "\n".join(m.content for m in params.messages if m.role == "system" and m.content)
    return normalize(user), normalize(system)


def to_bytes(text: str) -> bytes:
    """UTF-8 for the matcher, padded with a newline on both sides so that every pattern's
    boundary character class also matches at the start and end of the text."""
    return b"\n" + text.encode("utf-8", "replace") + b"\n"
