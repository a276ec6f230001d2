"""The scanned buffer: every request part, normalized, plus the decoded forms a value may hide
in, joined into one byte string for one Hyperscan pass, and the way back from a match in the
buffer to the exact characters of the part it came from.

Direct segments are the parts themselves (normalized). Derived segments are decoded views of a
part, added only when the part holds something to decode:

- backslash escapes (JSON `\\"`, `\\n`, `\\uXXXX`, up to three levels deep, so a PEM key in a
  JSON string inside a JSON tool result reads as a PEM key), whether or not the part parses
  as JSON;
- percent-encoding (`%40`, `%2F`): a URL with encoded query parameters;
- HTML character references (`&#52;`, `&amp;`);
- right-to-left override runs (U+202E), reversed: what a reader sees, not what is stored;
- base64 (found by the scan itself; see `Classifier`).

A derived segment maps back through its decoder's offsets map, so a value inside an escaped
string still has an exact location; a value found only in base64 or a reversed run has the
whole token (run) as its location. The same value found in a part and in its decoded view is
one finding (locations are merged).
"""

from __future__ import annotations

import bisect
import html
import re
from collections.abc import Callable
from dataclasses import dataclass

from gateway.inspect import normalize as n
from gateway.inspect.findings import Location

_ESCAPE = re.compile(
    r"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|u[0-9a-fA-F]{4}"
    r"|[\"\\/bfnrt])"
)
# Starts with its literal so `re` finds candidates by a fast literal search (a leading group
# made the search ~20x slower).
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}(?:%[0-9A-Fa-f]{2})*")
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_RLO_RUN = re.compile("\u202e([^\u202a-\u202e\u2066-\u2069\n]+)")
_ESCAPE_LEVELS = 3


_SIMPLE_ESCAPES = {
    '\\"': '"', "\\\\": "\\", "\\/": "/", "\\b": "\b", "\\f": "\f", "\\n": "\n",
    "\\r": "\r", "\\t": "\t",
}  # fmt: skip


def _unescape(match: re.Match[str]) -> str:
    """What JSON decodes an escape to: `\\uXXXX` is that code point (a lone surrogate too),
    and a high and low surrogate pair is the one character they encode. Computed here, not by
    `json.loads` (~10x slower per escape, and code is full of escapes)."""
    escape = match.group()
    simple = _SIMPLE_ESCAPES.get(escape)
    if simple is not None:
        return simple
    code = int(escape[2:6], 16)
    if len(escape) == 12:  # `_ESCAPE` matched a surrogate pair
        code = 0x10000 + ((code - 0xD800) << 10) + (int(escape[8:12], 16) - 0xDC00)
    return chr(code)


def _percent(match: re.Match[str]) -> str:
    return bytes.fromhex(match.group().replace("%", "")).decode("utf-8", "replace")


def _entity(match: re.Match[str]) -> str:
    return html.unescape(match.group())


@dataclass(slots=True)
class Segment:
    path: str
    source: str  # the part's original text
    text: str  # what was scanned
    start: int  # byte offsets of `text` in the buffer
    end: int
    # From `text` back to `source`, last transformation first; or a fixed span of `source`.
    remaps: tuple[n.Remap | n.LazyRemap | n.LazySubRemap, ...] = ()
    whole: tuple[int, int] | None = None
    derived: bool = False
    # The scanned text is the source and ASCII: buffer offsets map back by subtraction.
    plain: bool = False

    def source_span(self, data: bytes, start: int, end: int) -> tuple[int, int]:
        """Buffer byte offsets (within this segment) -> `source` str offsets."""
        if self.whole is not None:
            return self.whole
        begin, stop = start - self.start, end - self.start
        if not self.text.isascii():
            raw = data[self.start : self.end]
            begin = len(raw[:begin].decode("utf-8", "ignore"))
            stop = len(raw[:stop].decode("utf-8", "ignore"))
        for remap in self.remaps:
            begin, stop = remap.start(begin), remap.end(stop)
        return begin, stop


class ScanBuffer:
    """Segments joined by one separator and padded by a newline on both sides.

    The separator is a space between a segment ending in a digit and one starting with a digit
    (a number split across two messages, `4111 1111` | `1111 1111`, reads as typed), and a
    newline otherwise: rules that read the rest of a line (`password = x`, a .pgpass line)
    must not see the next part as more of the same line."""

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self._pieces: list[str] = []
        self._length = 1  # the leading newline
        self.data = b""

    def add(self, segment: Segment) -> None:
        text = segment.text
        size = len(text)
        encoded_len = size if text.isascii() else len(text.encode("utf-8", "replace"))
        pieces = self._pieces
        start = self._length
        if pieces:
            # The text's first character first: most parts start with a letter.
            spaced = text[:1].isdigit() and pieces[-1][-1:].isdigit()
            pieces.append(n.SEPARATOR if spaced else "\n")
            start += 1
        segment.start = start
        segment.end = self._length = start + encoded_len
        segment.plain = text is segment.source and encoded_len == size
        self.segments.append(segment)
        pieces.append(text)

    @classmethod
    def of_bytes(cls, data: bytes) -> ScanBuffer:
        """A buffer over already normalized, padded bytes: one part named "text"."""
        text = data[1:-1].decode("utf-8", "replace")
        scan = cls()
        scan.add(Segment("text", text, text, 0, 0))
        scan.data = data
        scan._starts = [1]
        return scan

    def seal(self) -> bytes:
        # `to_bytes` of the joined pieces, with its padding newlines joined in: one copy of the
        # text and one encoding, not three copies (~4 us less on the 100 KB bench prompt).
        self.data = "".join(["\n", *self._pieces, "\n"]).encode("utf-8", "replace")
        self._starts = [s.start for s in self.segments]
        return self.data

    def locate(self, start: int, end: int) -> list[Location]:
        """The parts a buffer span covers, with exact offsets in each (a span crossing a
        separator, as a card split over two messages does, gives one location per part)."""
        segments = self.segments
        index = max(0, bisect.bisect_right(self._starts, start) - 1)
        segment = segments[index]
        if segment.plain and segment.start <= start < end <= segment.end:
            # The usual case: inside one part scanned as is.
            return [Location(segment.path, start - segment.start, end - segment.start)]
        out = []
        while index < len(segments):
            segment = segments[index]
            if segment.start >= end:
                break
            lo, hi = max(start, segment.start), min(end, segment.end)
            if lo < hi:
                if segment.plain:
                    out.append(Location(segment.path, lo - segment.start, hi - segment.start))
                else:
                    first, last = segment.source_span(self.data, lo, hi)
                    out.append(Location(segment.path, first, last))
            index += 1
        return out

    def segment_at(self, offset: int) -> Segment | None:
        index = bisect.bisect_right(self._starts, offset) - 1
        if index < 0:
            return None
        segment = self.segments[index]
        return segment if offset < segment.end else None


def direct(path: str, text: str, normalize: Callable[[str], str] = n.normalize) -> Segment:
    normalized = normalize(text)
    remaps = () if normalized is text else (n.LazyRemap(text),)
    return Segment(path, text, normalized, 0, 0, remaps)


Replace = Callable[[re.Match[str]], str]


def _decoded(path: str, text: str, pattern: re.Pattern[str], replace: Replace) -> Segment | None:
    if pattern.search(text) is None:
        return None
    decoded = pattern.sub(replace, text)
    remap = n.LazySubRemap(pattern, text, replace)
    normalized = n.normalize(decoded)
    remaps = (n.LazyRemap(decoded), remap) if normalized is not decoded else (remap,)
    return Segment(path, text, normalized, 0, 0, remaps, derived=True)


def derived(path: str, text: str) -> list[Segment]:
    """Decoded views of a part; none for plain text (one `in` test per trigger)."""
    out: list[Segment] = []
    if len(text) < 4:
        return out  # too short to hold an escape and a value
    if "\\" in text:
        current, chain = text, list[n.Remap | n.LazyRemap | n.LazySubRemap]()
        for _ in range(_ESCAPE_LEVELS):
            if _ESCAPE.search(current) is None:
                break
            chain.insert(0, n.LazySubRemap(_ESCAPE, current, _unescape))
            current = _ESCAPE.sub(_unescape, current)
            if "\\" not in current:
                break
        if chain:
            normalized = n.normalize(current)
            if normalized is not current:
                chain.insert(0, n.LazyRemap(current))
            out.append(Segment(path, text, normalized, 0, 0, tuple(chain), derived=True))
    if "%" in text:
        segment = _decoded(path, text, _PERCENT, _percent)
        if segment is not None:
            out.append(segment)
    if "&" in text:
        segment = _decoded(path, text, _ENTITY, _entity)
        if segment is not None:
            out.append(segment)
    if "\u202e" in text:
        for match in _RLO_RUN.finditer(text):
            reversed_run = n.normalize(match.group(1))[::-1]
            out.append(Segment(path, text, reversed_run, 0, 0, whole=match.span(), derived=True))
    return out


def _has_encoding(text: str) -> bool:
    return len(text) >= 4 and ("\\" in text or "%" in text or "&" in text or "\u202e" in text)


def buffer(
    parts: list[tuple[str, str]], normalize: Callable[[str], str] = n.normalize
) -> ScanBuffer:
    """Message contents first, in order, so a value split across messages at a separator is
    read as typed; then every other part in request order; then the decoded views.
    `normalize`: `normalize.normalize`, or a `normalize.Memo` shared with other readers of
    the request."""
    scan = ScanBuffer()
    extra: list[Segment] = []
    ordered: list[tuple[str, str]] = []
    others: list[tuple[str, str]] = []
    for part in parts:  # one pass, one `endswith` per part
        (ordered if part[0].endswith(".content") else others).append(part)
    ordered += others
    add = scan.add
    for path, text in ordered:
        # Most parts are plain ASCII with nothing to decode: one Segment, no other work.
        if text.isascii():
            add(Segment(path, text, text, 0, 0))
        else:
            add(direct(path, text, normalize))
        if _has_encoding(text):
            extra.extend(derived(path, text))
    for segment in extra:
        add(segment)
    scan.seal()
    return scan
