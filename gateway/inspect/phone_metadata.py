"""libphonenumber's verdict on a number written with digits and separators only, replayed from
its own metadata compiled once.

`phonenumbers.parse` + `is_valid_number` cost 30-50 us per candidate: parsing runs generic
text regexes (RFC 3966, extensions, viability, vanity letters) over the raw string, and
validation looks each region's patterns up in `re`'s cache again and walks every region that
shares the calling code (+1: 25 of them) with about eleven number-type patterns each. For a
string of ASCII digits, spaces, `-`, `.`, parentheses and at most one leading `+` none of the
text steps changes anything, and what `parse` does reduces to steps on the digit string: strip
the region's international prefix, read the calling code, strip the national prefix (or apply
its transform rule), check lengths. This module mirrors exactly those steps of
`phonenumberutil.parse`, `is_valid_number` and `is_possible_number_with_reason` (phonenumbers
9.x), with each region's and calling code's patterns compiled once and the number-type
patterns of one length merged into one alternation. Decisions are identical to the library's;
`tests/unit/test_phone_fast_path.py` compares the two over many thousands of candidates.

Nothing derived from a candidate is kept: only metadata (regions, calling codes) is cached.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from enum import IntEnum

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata, ValidationResult

# The limits `phonenumberutil` applies (its private constants of the same names).
_MIN_LENGTH_FOR_NSN = 2
_MAX_LENGTH_FOR_NSN = 17
_MAX_LENGTH_COUNTRY_CODE = 3
_MAX_INPUT_LENGTH = 250
_NON_GEO = "001"
# The number types `_number_type_helper` tries after the general description; any match makes
# the number valid. Mobile is left out where the metadata says its pattern is fixed-line's
# (the helper then never tests it).
_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
)


class Verdict(IntEnum):
    """What libphonenumber says about a candidate across the regions it was parsed for."""

    NEITHER = 0  # no parse, or parsed but not even a possible length
    POSSIBLE = 1  # IS_POSSIBLE or IS_POSSIBLE_LOCAL_ONLY for some region, valid for none
    VALID = 2  # is_valid_number for some region


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    return re.compile(pattern) if pattern else None


class Meta:
    """One region's (or non-geographic calling code's) metadata, precompiled."""

    __slots__ = (
        "code_text",
        "country",
        "country_code",
        "general",
        "general_lengths",
        "international_prefix",
        "keeps_stripped",
        "known_by_length",
        "length_results",
        "local_lengths",
        "national_prefix",
        "possible",
        "possible_lengths",
        "transform_rule",
    )

    def __init__(self, metadata: PhoneMetadata) -> None:
        assert metadata.country_code is not None and metadata.general_desc is not None
        self.country_code: int = metadata.country_code
        general = metadata.general_desc
        self.general = _compile(general.national_number_pattern)
        self.general_lengths = frozenset(general.possible_length)
        descs = [getattr(metadata, name) for name in _TYPES]
        if not metadata.same_mobile_and_fixed_line_pattern:
            descs.append(metadata.mobile)
        # `_number_type_helper(nsn) != UNKNOWN` as one pattern per length: the general
        # description (its lengths, then its pattern) and any type whose description applies
        # to that length (it lists the length, or lists none) with a non-empty pattern.
        # Compiled on first use (a union per length of every type pattern is ~100 ms for the
        # default regions at start-up otherwise); the source text until then.
        known: list[re.Pattern[str] | str | None] = []
        for length in range(_MAX_LENGTH_FOR_NSN + 1):
            patterns = [
                desc.national_number_pattern
                for desc in descs
                if desc is not None
                and desc.national_number_pattern
                and (not desc.possible_length or length in desc.possible_length)
            ]
            if (
                not patterns
                or self.general is None
                or (self.general_lengths and length not in self.general_lengths)
            ):
                known.append(None)
                continue
            types = "|".join(f"(?:{p})" for p in patterns)
            known.append(f"(?=(?:{self.general.pattern})\\Z)(?:{types})")
        self.known_by_length = known
        # No international prefix: the library matches the digits against "NonMatch".
        self.international_prefix = _compile(metadata.international_prefix)
        self.national_prefix = _compile(metadata.national_prefix_for_parsing)
        self.transform_rule = metadata.national_prefix_transform_rule or None
        self.possible_lengths = tuple(general.possible_length)
        self.local_lengths = frozenset(general.possible_length_local_only)
        self.length_results = tuple(self._length_result(n) for n in range(_MAX_INPUT_LENGTH + 1))
        # `parse` keeps a national number with its national prefix stripped unless the rest
        # is too short, local-only or of an impossible length.
        self.keeps_stripped = frozenset(
            n
            for n, result in enumerate(self.length_results)
            if result
            not in (
                ValidationResult.TOO_SHORT,
                ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
                ValidationResult.INVALID_LENGTH,
            )
        )
        # `is_possible_number_with_reason` is IS_POSSIBLE or IS_POSSIBLE_LOCAL_ONLY.
        self.possible = frozenset(
            n
            for n, result in enumerate(self.length_results)
            if result in (ValidationResult.IS_POSSIBLE, ValidationResult.IS_POSSIBLE_LOCAL_ONLY)
        )
        self.code_text = str(self.country_code)
        # The calling code's plan, set once built (`region`, `_country`).
        self.country: _Country | None = None

    def _length_result(self, length: int) -> int:
        """`_test_number_length(number, metadata)` for the general description."""
        if length in self.local_lengths:
            return ValidationResult.IS_POSSIBLE_LOCAL_ONLY
        lengths = self.possible_lengths
        if lengths[0] == length:
            return ValidationResult.IS_POSSIBLE
        if lengths[0] > length:
            return ValidationResult.TOO_SHORT
        if lengths[-1] < length:
            return ValidationResult.TOO_LONG
        if length in lengths[1:]:
            return ValidationResult.IS_POSSIBLE
        return ValidationResult.INVALID_LENGTH

    def length_result(self, length: int) -> int:
        if length < len(self.length_results):
            return self.length_results[length]
        return self._length_result(length)

    def general_match(self, number: str) -> bool:
        """`_match_national_number(number, general_desc, False)`: pattern only, no lengths."""
        return self.general is not None and self.general.fullmatch(number) is not None

    def known_type(self, nsn: str) -> bool:
        """`_number_type_helper(nsn, metadata) != UNKNOWN`."""
        length = len(nsn)
        known = self.known_by_length[length] if length <= _MAX_LENGTH_FOR_NSN else None
        if known is None:
            return False
        if isinstance(known, str):
            # Two threads may both compile it: the same pattern either way.
            known = self.known_by_length[length] = re.compile(known)
        return known.fullmatch(nsn) is not None

    def strip_national_prefix(self, number: str) -> str:
        """`_maybe_strip_national_prefix_carrier_code(number, metadata)[1]`."""
        if not number or self.national_prefix is None:
            return number
        match = self.national_prefix.match(number)
        if match is None:
            return number
        viable = self.general_match(number)
        if self.transform_rule is None or match.groups()[-1] is None:
            stripped = number[match.end() :]
        else:
            stripped = self.national_prefix.sub(self.transform_rule, number, count=1)
        if viable and not self.general_match(stripped):
            return number
        return stripped


class _Country:
    """What `is_valid_number` and `is_possible_number_with_reason` need for one calling code."""

    __slots__ = ("lengths", "main", "steps")

    def __init__(self, code: int, regions: Sequence[str]) -> None:
        main = _meta(regions[0], code)
        assert main is not None
        # `is_possible_number_with_reason`: the lengths of the calling code's main region.
        self.main = main
        # `region_code_for_number` then `is_valid_number_for_region`: with one region, that
        # region decides; with several, the first whose leading digits match (those that have
        # them) or whose types know the number (those without) decides.
        steps: list[tuple[re.Pattern[str] | None, Meta, bool]] = []
        for region in regions:
            if len(regions) == 1:
                meta = _meta(region, code)
                leading = None
            else:
                raw = PhoneMetadata.metadata_for_region(region.upper(), None)
                if raw is None:
                    continue
                meta = _meta(region, code)
                leading = _compile(raw.leading_digits) if raw.leading_digits is not None else None
            if meta is None:
                continue
            same_code = region == _NON_GEO or phonenumbers.country_code_for_region(region) == code
            steps.append((leading, meta, same_code))
        self.steps = tuple(steps)
        lengths: set[int] = set()
        for _, meta, _ in self.steps:
            if not meta.general_lengths:
                lengths = set(range(_MAX_LENGTH_FOR_NSN + 1))
                break
            lengths |= meta.general_lengths
        # A length no region's general description allows is never valid, whichever decides.
        self.lengths = frozenset(lengths)

    def valid(self, nsn: str) -> bool:
        if len(nsn) not in self.lengths:
            return False
        if len(self.steps) == 1 and self.steps[0][0] is None:
            _, meta, same_code = self.steps[0]
            return same_code and meta.known_type(nsn)
        for leading, meta, same_code in self.steps:
            if leading is not None:
                if leading.match(nsn) is not None:
                    return same_code and meta.known_type(nsn)
            elif meta.known_type(nsn):
                return same_code
        return False

    def possible(self, nsn: str) -> bool:
        return len(nsn) in self.main.possible


_LOCK = threading.Lock()
_METAS: dict[tuple[str, int], Meta | None] = {}
_COUNTRIES: dict[int, _Country | None] = {}


def _meta(region: str, code: int) -> Meta | None:
    """`metadata_for_region_or_calling_code(code, region)`, compiled (cached per region)."""
    key = (region, code if region == _NON_GEO else 0)
    try:
        return _METAS[key]
    except KeyError:
        pass
    with _LOCK:
        if key not in _METAS:
            raw = PhoneMetadata.metadata_for_region_or_calling_code(code, region.upper())
            _METAS[key] = Meta(raw) if raw is not None else None
        return _METAS[key]


def _country(code: int) -> _Country | None:
    try:
        return _COUNTRIES[code]
    except KeyError:
        pass
    regions = COUNTRY_CODE_TO_REGION_CODE.get(code)
    built = _Country(code, regions) if regions else None
    with _LOCK:
        country = _COUNTRIES.setdefault(code, built)
    if country is not None:
        country.main.country = country
    return country


# The calling codes by number of digits, as text: `_extract_country_code` tries one, two,
# then three leading digits.
_CODES = tuple(
    frozenset(str(code) for code in COUNTRY_CODE_TO_REGION_CODE if len(str(code)) == size)
    for size in range(_MAX_LENGTH_COUNTRY_CODE + 1)
)


def _extract_country_code(number: str) -> tuple[int, str]:
    """`_extract_country_code`: the shortest leading digits that are a known calling code
    (none begins with 0)."""
    if number[:1] in _CODES[1]:
        return int(number[:1]), number[1:]
    if number[:2] in _CODES[2]:
        return int(number[:2]), number[2:]
    if number[:3] in _CODES[3]:
        return int(number[:3]), number[3:]
    return 0, number


def region(name: str) -> Meta:
    """The compiled metadata of a region libphonenumber knows (and of its calling code)."""
    meta = _meta(name, 0)
    if meta is None:
        raise ValueError(f"no phone metadata for region {name!r}")
    meta.country = _country(meta.country_code)
    return meta


def _parse(digits: str, plus: bool, region: Meta | None) -> tuple[_Country, str] | None:
    """`parse(text, region)` for a text of digits and separators (a `+` only in front):
    the calling code's plan and the national significant number, or None where the library
    raises NumberParseException. `region` comes from `region()` (its `country` is set)."""
    full = digits
    international = plus
    if not plus:
        if region is None:  # no region and no `+`: "Missing or invalid default region."
            return None
        idd = region.international_prefix
        match = idd.match(full) if idd is not None else None
        # The prefix counts only when the digit after it is not a 0 (no calling code starts so).
        if match is not None and not full.startswith("0", match.end()):
            full = full[match.end() :]
            international = True
    if international:
        if len(full) <= _MIN_LENGTH_FOR_NSN:
            return None  # TOO_SHORT_AFTER_IDD
        code, national = _extract_country_code(full)
        if code == 0:
            # INVALID_COUNTRY_CODE. After a `+` the library retries without it, which for a
            # text parsed without a region (every `+` text here) fails again.
            return None
        country = _COUNTRIES.get(code) or _country(code)
        if country is None:
            return None
        metadata = country.main
    else:
        assert region is not None and region.country is not None
        country = region.country
        national = full
        metadata = region
        code_text = region.code_text
        if full.startswith(code_text):
            # The digits may begin with the region's own calling code written without `+`.
            potential = region.strip_national_prefix(full[len(code_text) :])
            if (not region.general_match(full) and region.general_match(potential)) or (
                region.length_result(len(full)) == ValidationResult.TOO_LONG
            ):
                national = potential
                metadata = country.main
    if len(national) < _MIN_LENGTH_FOR_NSN:
        return None
    if metadata.national_prefix is not None:
        potential = metadata.strip_national_prefix(national)
        if len(potential) in metadata.keeps_stripped:
            national = potential
    if not _MIN_LENGTH_FOR_NSN <= len(national) <= _MAX_LENGTH_FOR_NSN:
        return None
    return country, national


def verdict(digits: str, plus: bool, regions: Sequence[Meta | None]) -> Verdict:
    """The library's verdict over `parse(text, region)` for each region in turn: VALID as soon
    as one parse is a valid number, else POSSIBLE if one has a possible length.

    `digits`: every digit of the text, in order. `plus`: the text begins with `+` (after
    opening parentheses); such a text is parsed without a region (`regions` is `(None,)`)."""
    possible = False
    for region in regions:
        parsed = _parse(digits, plus, region)
        if parsed is None:
            continue
        country, nsn = parsed
        if country.valid(nsn):
            return Verdict.VALID
        if not possible and len(nsn) in country.main.possible:
            possible = True
    return Verdict.POSSIBLE if possible else Verdict.NEITHER
