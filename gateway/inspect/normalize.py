"""Text normalization run before detection.

Normalization undoes the cheap evasions that keep a value readable to a model while hiding it
from a byte matcher. Per character (so every output character maps back to the input character
it came from, for exact finding locations):

- compatibility forms (full-width digits, ligatures, circled digits, non-breaking and thin
  spaces) via NFKC, one character at a time; combining marks that stand alone (the enclosing
  keycap U+20E3, marks stacked on digits) are dropped, so `4⃣1⃣` and `4̸1̸` read as `41`, while
  precomposed letters (`é`) are kept;
- every Unicode decimal digit (category Nd: Arabic-Indic, Devanagari, ...) becomes its ASCII
  digit;
- invisible characters (zero-width spaces and joiners, soft hyphens, bidi controls, variation
  selectors) are removed; Unicode dashes and minus signs become `-`;
- Unicode tag characters (which smuggle ASCII text invisibly) become the ASCII they encode.

ASCII text is returned unchanged without any per-character work.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from gateway.chat import ChatParams

# Messages are joined by one space: a value whose digit groups are split across two messages
# ("4111 1111" + "1111 1111") reads exactly as if the user had typed the separator, so it is
# found; nothing is glued together that no message contains, so no word is invented at a seam.
SEPARATOR = " "

_INVISIBLE = frozenset(
    [
        *(0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFEFF, 0xFFA0),
        *range(0x180B, 0x1810),
        *range(0x200B, 0x2010),
        *range(0x202A, 0x202F),
        *range(0x2060, 0x2070),
        *range(0xFE00, 0xFE10),
        *range(0xE0000, 0xE0020),
        0xE007F,
        *range(0xE0100, 0xE01F0),  # variation selectors supplement
    ]
)
_DASHES = frozenset([*range(0x2010, 0x2016), 0x2212, 0xFE58, 0xFE63, 0xFF0D])


def _char(code: int) -> str:
    """What one non-ASCII character normalizes to (possibly nothing, possibly several)."""
    if code in _INVISIBLE:
        return ""
    if 0xE0020 <= code <= 0xE007E:
        return chr(code - 0xE0000)  # tag characters mirror printable ASCII
    if code in _DASHES:
        return "-"
    char = chr(code)
    digit = unicodedata.decimal(char, None)
    if digit is not None:
        return str(digit)
    out = []
    for part in unicodedata.normalize("NFKC", char):
        category = unicodedata.category(part)
        if category in ("Mn", "Me"):
            continue
        if category == "Nd":
            out.append(str(unicodedata.decimal(part)))
        elif ord(part) in _DASHES:
            out.append("-")
        else:
            out.append(part)
    return "".join(out)


class _Table(dict[int, str]):
    """`str.translate` table filled on first sight of each character: after warm-up the
    translation runs in C."""

    def __missing__(self, code: int) -> str:
        value = _char(code)
        self[code] = value
        return value


_TABLE = _Table()


_NON_ASCII_RUN = re.compile("[^\x00-\x7f]+")


def _translate_run(match: re.Match[str]) -> str:
    return match.group().translate(_TABLE)


def normalize(text: str) -> str:
    """The text a detector reads. ASCII is returned as is."""
    if text.isascii():
        return text
    # `translate` looks every character up, ASCII included (~40 ns each). In mostly-ASCII text
    # (a few accents, smart quotes, dashes) only the runs of non-ASCII characters are
    # translated, found by `re`: the same text (each character maps on its own), ~2-3x sooner.
    extra_bytes = len(text.encode("utf-8", "surrogatepass")) - len(text)
    if extra_bytes * 16 < len(text):
        return _NON_ASCII_RUN.sub(_translate_run, text)
    return text.translate(_TABLE)


class Memo:
    """`normalize` for the texts of one request, each non-ASCII text translated once (a
    message's content is read by the scan buffer, the token estimate and the task cues).
    Made per inspection and dropped with it: it holds the request's content."""

    __slots__ = ("_done",)

    def __init__(self) -> None:
        self._done: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        if text.isascii():
            return text
        done = self._done.get(text)
        if done is None:
            done = self._done[text] = normalize(text)
        return done


_NON_ASCII = re.compile("[^\x00-\x7f]")


@dataclass(frozen=True, slots=True)
class Remap:
    """Maps offsets in a transformed text back to the text it came from.

    `edits` are the places where the transformation changed length or content:
    (new_start, new_end, old_start, old_end), sorted. Outside edits, offsets shift by the sum of
    the length changes before them; an offset inside an edit maps to the edit's whole source.
    """

    edits: tuple[tuple[int, int, int, int], ...]

    def start(self, pos: int) -> int:
        return self._map(pos, end=False)

    def end(self, pos: int) -> int:
        return self._map(pos, end=True)

    def _map(self, pos: int, *, end: bool) -> int:
        edits = self.edits
        # A start belongs to the edit at or before it; an end to the edit strictly before it
        # (a span ending where an edit begins does not include that edit's source).
        if end:
            index = bisect.bisect_left(edits, (pos,)) - 1
        else:
            index = bisect.bisect_right(edits, (pos, 1 << 62)) - 1
        if index < 0:
            return pos
        _, new_end, old_start, old_end = edits[index]
        if pos < new_end:
            # Inside an edit: the edit's whole source.
            return old_end if end else old_start
        return old_end + (pos - new_end)


IDENTITY = Remap(())


class LazyRemap:
    """`normalize_remap(text)`, computed on first use: most parts never need locating."""

    __slots__ = ("_remap", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._remap: Remap | None = None

    def _get(self) -> Remap:
        if self._remap is None:
            self._remap = normalize_remap(self._text)
        return self._remap

    def start(self, pos: int) -> int:
        return self._get().start(pos)

    def end(self, pos: int) -> int:
        return self._get().end(pos)


def normalize_remap(text: str) -> Remap:
    """The offsets map of `normalize(text)` (computed only when a finding needs locating)."""
    if text.isascii():
        return IDENTITY
    edits = []
    shift = 0
    for match in _NON_ASCII.finditer(text):
        old = match.start()
        value = _TABLE[ord(match.group())]
        new = old + shift
        if len(value) != 1:
            edits.append((new, new + len(value), old, old + 1))
            shift += len(value) - 1
    return Remap(tuple(edits))


def to_bytes(text: str) -> bytes:
    """UTF-8 for the matcher, padded with a newline on both sides so that every pattern's
    boundary character class also matches at the start and end of the text."""
    return b"\n" + text.encode("utf-8", "replace") + b"\n"


def sub_remap(
    pattern: re.Pattern[str], text: str, replace: Callable[[re.Match[str]], str]
) -> tuple[str, Remap]:
    """`pattern.sub(replace, text)` with the offsets map back to `text`. Linear."""
    pieces: list[str] = []
    edits: list[tuple[int, int, int, int]] = []
    last = shift = 0
    for match in pattern.finditer(text):
        start, end = match.span()
        value = replace(match)
        pieces.append(text[last:start])
        pieces.append(value)
        new = start + shift
        edits.append((new, new + len(value), start, end))
        shift += len(value) - (end - start)
        last = end
    pieces.append(text[last:])
    return "".join(pieces), Remap(tuple(edits))


class LazySubRemap:
    """The offsets map of `pattern.sub(replace, text)`, computed on first use (the decoded
    text itself comes from `re.sub`, in C; the map is only needed to locate a finding)."""

    __slots__ = ("_args", "_remap")

    def __init__(
        self, pattern: re.Pattern[str], text: str, replace: Callable[[re.Match[str]], str]
    ) -> None:
        self._args = (pattern, text, replace)
        self._remap: Remap | None = None

    def _get(self) -> Remap:
        if self._remap is None:
            self._remap = sub_remap(*self._args)[1]
        return self._remap

    def start(self, pos: int) -> int:
        return self._get().start(pos)

    def end(self, pos: int) -> int:
        return self._get().end(pos)


# Normalization maps each character on its own and the separators are ASCII: normalizing the
# pieces and joining them gives the normalized joined text, with each piece looked up in a
# `Memo` the scan buffer has already filled.


def request_text(params: ChatParams, normalized: Callable[[str], str] = normalize) -> str:
    """The conversation's text (names, contents, tool calls), normalized, for the token
    estimate."""
    segments: list[str] = []
    for message in params.messages:
        if message.name:
            segments.append(message.name)
        if message.content:
            segments.append(message.content)
        for call in message.tool_calls:
            segments.append(call.name)
            segments.append(call.arguments)
    text = SEPARATOR.join(segments)
    if text.isascii():
        return text
    return SEPARATOR.join([normalized(segment) for segment in segments])


def instruction_text(
    params: ChatParams, normalized: Callable[[str], str] = normalize
) -> tuple[str, str]:
    """(last user message, system messages), normalized: what the caller asks for. Assistant
    history and tool results are data, not instructions, so they do not set the task type."""
    user = ""
    for message in reversed(params.messages):
        if message.role == "user":
            user = message.content
            break
    system = "\n".join(
        [normalized(m.content) for m in params.messages if m.role == "system" and m.content]
    )
    return normalized(user), system
