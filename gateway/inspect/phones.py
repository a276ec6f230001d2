"""Phone numbers: Hyperscan finds number-shaped candidates, libphonenumber (`phonenumbers`)
decides whether each one is a telephone number of a configured region.

A candidate counts when
- libphonenumber calls it a *valid* number: international (`+CC`, `00CC`, `011 CC`) against
  its own country's plan, national ones against any configured region;
- or it is written in the full NANP shape (`(415) 867-5309`, `415.867.5309`, `1-800-...`):
  a ten-digit number with its groups is a phone number to a reader even when its area code is
  not assigned (yet);
- or it is only *possible* (right length, local-only such as a 7-digit `867-5309`, or an
  unassigned prefix) and a phone word (`call`, `phone`, `tel`, `mobile`, `fax`, `ext` ...)
  stands in the 40 characters before it.

Extensions (`x1234`, `ext. 12`, `#12`) are part of the candidate and parsed as extensions.
Never counted: a ZIP+4 code (`02110-1301`, five digits, a dash, four digits: the US postal
format, found in every GPL header), NANP 555-0100..0199 (reserved for fiction).

Cost: `phonenumbers.parse` + `is_valid_number` take 30-50 us per candidate and a national
number is parsed for every configured region. Candidates written with digits and separators
only (nearly all that the scanner reports) are decided by `phone_metadata`, which replays the
library's steps from its own metadata compiled once (~5 us); other shapes go to the library.
The library-only decision the replay is tested against is tests/phone_reference.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, ValidationResult

from gateway.config import DEFAULT_PHONE_REGIONS, InspectionConfig
from gateway.inspect import phone_metadata
from gateway.inspect.phone_metadata import Verdict

DEFAULT_REGIONS = DEFAULT_PHONE_REGIONS

_CUE = re.compile(
    rb"(?i)\b(?:phone|tel\b|tel\.|telephone|call|cell|mobile|mob\b|fax|contact|reach|"
    rb"text\s+me|whatsapp|ext\b|ext\.|hotline|dial|ph\b|ph\.|t\xc3\xa9l|"
    rb"telefon|tel\xc3\xa9fono|telefono|celular|\xe2\x98\x8e)"
)
# `_CUE` for searching a window: every word it names begins with one of these bytes (either
# case), and checking that first halves the time of a search that finds nothing.
_CUE_SCAN = re.compile(rb"(?i)\b(?=[ptcmfrwehd\xe2])" + _CUE.pattern[len(rb"(?i)\b") :])
# `July 06 1956` is a date; `ISSN 0377-0427`, `ISBN ...`, `version 1 234 5678` are not phones.
_NOT_PHONE_BEFORE = re.compile(
    rb"(?i)(?:\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?,?|"
    rb"\b(?:issn|isbn|doi|pages?|pp\.|version|ver\.|v))\s*[:.]?\s*$"
)
# Every word `_NOT_PHONE_BEFORE` names begins so: when the last word before the candidate
# (after trailing spaces and `:.,`) does not, the pattern cannot match and is not run.
_NOT_PHONE_STEMS = (
    b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
    b"dec", b"issn", b"isbn", b"doi", b"page", b"pp", b"v",
)  # fmt: skip
_NOT_PHONE_TAIL = b" \t\n\r\x0b\x0c:.,"
_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DATE_SHAPE = re.compile(rb"[0-9]{1,2}[\-/.][0-9]{1,2}[\-/.][0-9]{2,4}")
_ZIP4 = re.compile(rb"[0-9]{5}-[0-9]{4}")
_NANP_SHAPE = re.compile(
    rb"(?:(?:\+|00|011[ .\-]?)?1[ .\-]?)?"
    rb"(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .\-])[2-9][0-9]{2}[ .\-][0-9]{4}"
)
_EXTENSION = re.compile(rb"(?i)\s*(?:x|ext\.?|extension|#)\s*([0-9]{1,6})$")
_CORE_CHARS = frozenset(b"0123456789+()")
# The shapes `phone_metadata` decides without the library: ASCII digits and separators, with
# at most one `+`, in front (after opening parentheses), optionally followed by an extension
# written with a single space either side of its label (the library's extension pattern then
# splits it off at the same place). Anything else (other letters, `/`, tabs, several `+`)
# goes through `phonenumbers.parse`.
_PLAIN = re.compile(rb"(\(*\+)?[0-9 ().\-]*")
_PLAIN_EXTENSION = re.compile(rb"(?i) ?(?:x|ext\.?|extension|#) ?[0-9]{1,6}")
# The library refuses longer input (its _MAX_INPUT_STRING_LENGTH).
_MAX_PARSE_INPUT = 250
_NOT_DIGITS = bytes(b for b in range(256) if not 48 <= b <= 57)


def _core(data: bytes, start: int, end: int) -> tuple[int, int]:
    """The candidate without the boundary characters its pattern consumed."""
    while start < end and data[start] not in _CORE_CHARS:
        start += 1
    while end > start and data[end - 1] not in _CORE_CHARS and not data[end - 1 : end].isalpha():
        end -= 1
    return start, end


def _inside_number(data: bytes, start: int, end: int) -> bool:
    """The candidate continues a number (`1.519 829 846 0570`: a column of a numeric table)
    or is the integer part of a decimal (`+35236450.6`)."""
    before = data[start - 1 : start] if start > 0 else b""
    if data[start : start + 1] == b" " and (
        before.isdigit() or (before == b"." and data[start - 2 : start - 1].isdigit())
    ):
        return True
    return data[end - 1 : end] == b"." and data[end : end + 1].isdigit()


def _not_phone_before(data: bytes, start: int) -> bool:
    """`_NOT_PHONE_BEFORE.search(data, max(0, start - 12), start)`, run only when the last
    word before the candidate could be one of its words."""
    low = max(0, start - 12)
    before = data[low:start].rstrip(_NOT_PHONE_TAIL)
    # The last word: the run of letters `before` ends with (`rstrip` finds its start in C).
    word = before[len(before.rstrip(_LETTERS)) :]
    if not word.lower().startswith(_NOT_PHONE_STEMS):
        return False
    return _NOT_PHONE_BEFORE.search(data, low, start) is not None


def check_regions(regions: Iterable[str]) -> tuple[str, ...]:
    """The configured regions, upper-cased; ValueError naming an unknown one."""
    known = phonenumbers.SUPPORTED_REGIONS
    out = []
    for index, region in enumerate(regions):
        code = region.strip().upper()
        if code not in known:
            raise ValueError(
                f"inspection.phone_regions[{index}]: {region!r} is not a region libphonenumber"
                " knows (use ISO 3166-1 alpha-2 codes such as US, GB, DE)"
            )
        out.append(code)
    return tuple(out)


class PhoneValidator:
    """The `pii.phone` validator for one set of regions. Thread-safe (no state per call).

    Candidates written with digits and separators only (and a simple extension) are decided by
    `phone_metadata` from the library's metadata: ~5 us where the library takes 40 us
    (`+44 ...`) to 0.6 ms (a national number, parsed for each of 19 regions). The decision as
    it was first written, with `phonenumbers.parse` + `is_valid_number` for every candidate, is
    kept as the reference the tests compare against (tests/phone_reference.py)."""

    def __init__(self, regions: Sequence[str] = DEFAULT_REGIONS, *, cue: bool = False) -> None:
        self.regions = check_regions(regions) or DEFAULT_REGIONS
        # Shapes that ids and codes share (unseparated national numbers, 7-digit locals):
        # counted only after a phone word, however valid the digits are.
        self.cue = cue
        # Compiled once here: the configured regions, and those the international dialling
        # prefixes stand for (`00` is parsed as from Germany, `011` as from the US).
        self._metas = tuple(phone_metadata.region(region) for region in self.regions)
        self._metas_00 = (phone_metadata.region("DE"),)
        self._metas_011 = (phone_metadata.region("US"),)
        self._metas_plus: tuple[phone_metadata.Meta | None, ...] = (None,)

    def __call__(self, data: bytes, start: int, end: int) -> bool:
        # The decisions of the library-only reference (tests/phone_reference.py), cheapest
        # first, with cheaper equivalents.
        if _inside_number(data, start, end):
            return False
        start, end = _core(data, start, end)
        if end - start < 7:
            return False
        text = data[start:end]
        if _ZIP4.fullmatch(text) or _not_phone_before(data, start):
            return False
        plain = _PLAIN.fullmatch(text)
        number = text
        if plain is None:  # a plain text has no `x`, `X` or `#`: no extension
            ext = _EXTENSION.search(text)
            if ext is not None:
                number = text[: ext.start()]
                if _PLAIN_EXTENSION.fullmatch(text, ext.start()):
                    plain = _PLAIN.fullmatch(number)
        all_digits = number.translate(None, _NOT_DIGITS)
        digits = all_digits
        if len(digits) == 11 and digits.startswith(b"1"):
            digits = digits[1:]
        if (len(digits) == 10 and digits[3:6] == b"555" and digits[6:8] == b"01") or (
            len(digits) == 7 and digits.startswith(b"55501")
        ):
            return False
        if _DATE_SHAPE.fullmatch(number):
            return False
        cued: bool | None = None
        if self.cue or len(digits) < 8:
            # Short numbers and id-like shapes need a phone word (or a phone column).
            cued = _cued_fast(data, start)
            if not cued:
                return False
        found = None
        if plain is not None and len(all_digits) >= 3 and len(text) <= _MAX_PARSE_INPUT:
            # The library's viability check wants three digits (before an extension too), its
            # parser at most 250 characters.
            found = self._replay(text, all_digits, plus=plain.group(1) is not None)
        if found is None:
            found = self._library_verdict(text.decode("ascii", "replace"))
        if found is Verdict.VALID:
            return True
        if found is Verdict.NEITHER:
            return False
        if _NANP_SHAPE.fullmatch(number.strip()) or number.startswith(b"+"):
            # Written in full NANP groups, or in E.164 form with its `+`: no id looks so.
            return True
        return cued if cued is not None else _cued_fast(data, start)

    def _replay(self, text: bytes, digits: bytes, *, plus: bool) -> Verdict:
        """`_library_verdict` for a plain text (digits and separators, a `+` only in front),
        replayed from the metadata: the same regions for the same prefixes."""
        if plus:
            metas = self._metas_plus
        else:
            stripped = text.lstrip(b"(")
            if stripped.startswith(b"00"):
                metas = self._metas_00
            elif stripped.startswith((b"011 ", b"011-", b"011.")):
                metas = self._metas_011
            else:
                metas = self._metas
        return phone_metadata.verdict(digits.decode("ascii"), plus, metas)

    def _fast_verdict(self, text: bytes) -> Verdict | None:
        """The replayed verdict for a candidate's text, or None for a shape the replay does not
        cover (the library decides those). As `__call__` decides, for tests and benchmarks."""
        number = text
        plain = _PLAIN.fullmatch(text)
        if plain is None:
            ext = _EXTENSION.search(text)
            if ext is not None and _PLAIN_EXTENSION.fullmatch(text, ext.start()):
                number = text[: ext.start()]
                plain = _PLAIN.fullmatch(number)
        digits = number.translate(None, _NOT_DIGITS)
        if plain is None or len(digits) < 3 or len(text) > _MAX_PARSE_INPUT:
            return None
        return self._replay(text, digits, plus=plain.group(1) is not None)

    def _library_verdict(self, text: str) -> Verdict:
        """`phonenumbers.parse` + `is_valid_number` / `is_possible_number_with_reason` for each
        region the text is read for, parsed one after the other: the first valid one ends it
        (the reference parses for every region first)."""
        possible = False
        for parsed in self._parses(text):
            if phonenumbers.is_valid_number(parsed):
                return Verdict.VALID
            reason = phonenumbers.is_possible_number_with_reason(parsed)
            if reason in (ValidationResult.IS_POSSIBLE, ValidationResult.IS_POSSIBLE_LOCAL_ONLY):
                possible = True
        return Verdict.POSSIBLE if possible else Verdict.NEITHER

    def _parses(self, text: str) -> Iterator[PhoneNumber]:
        stripped = text.lstrip("(")
        if stripped.startswith("+"):
            regions: tuple[str | None, ...] = (None,)
        elif stripped.startswith(("00", "011 ", "011-", "011.")):
            # International dialling prefixes: the region that uses it is the caller's.
            regions = ("DE",) if stripped.startswith("00") else ("US",)
        else:
            regions = self.regions
        for region in regions:
            try:
                yield phonenumbers.parse(text, region)
            except NumberParseException:
                continue


def validator(config: InspectionConfig) -> PhoneValidator:
    return PhoneValidator(config.phone_regions)


def cued_validator(config: InspectionConfig) -> PhoneValidator:
    return PhoneValidator(config.phone_regions, cue=True)


def _cued_fast(data: bytes, start: int) -> bool:
    """A phone word in the 40 bytes before the number, or the number sits in a delimited
    table's column whose header is a phone word (a CSV export). `_CUE` and
    `_csv_phone_column`, with a faster equivalent pattern and column check."""
    if _CUE_SCAN.search(data, max(0, start - 40), start) is not None:
        return True
    return _in_phone_column(data, start + 1)


def _in_phone_column(data: bytes, start: int) -> bool:
    """`_csv_phone_column`, answered without copying the line when it has fewer than two of
    every separator (prose: the usual case)."""
    line_start = data.rfind(b"\n", 0, start) + 1
    line_end = data.find(b"\n", start)
    if line_end < 0:
        line_end = len(data)
    for sep in (b",", b";", b"\t", b"|"):
        if data.count(sep, line_start, line_end) >= 2:
            return _csv_phone_column(data, start)
    return False


def _csv_phone_column(data: bytes, start: int) -> bool:
    line_start = data.rfind(b"\n", 0, start) + 1
    line_end = data.find(b"\n", start)
    line = data[line_start : line_end if line_end >= 0 else len(data)]
    for sep in (b",", b";", b"\t", b"|"):
        cells = line.count(sep)
        if cells < 2:
            continue
        column = data.count(sep, line_start, start)
        # The nearest line above with as many separators, within 64 lines: the header.
        end = line_start - 1
        for _ in range(64):
            if end <= 0:
                break
            begin = data.rfind(b"\n", 0, end) + 1
            row = data[begin:end]
            if row.count(sep) == cells:
                header = row.split(sep)[column]
                if _CUE.search(header) and not any(48 <= b <= 57 for b in header):
                    return True
            elif row.count(sep) != cells:
                break
            end = begin - 1
        return False
    return False
