"""Checks run on candidate matches only. Each takes the scanned buffer and the candidate's
span (which includes one boundary character on either side where the pattern asks for one)
and answers yes or no. Matched values never leave these functions: no logging, no exceptions
that quote them, nothing stored.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import ipaddress
import json
import math
import re
import urllib.parse
import zlib
from collections import Counter
from collections.abc import Callable

# Answers no (False), yes (True: the finding is the candidate without its boundary characters)
# or the exact span of the sensitive value (a password after its key, a whole PEM block).
Validator = Callable[[bytes, int, int], "bool | tuple[int, int]"]
# For patterns shared by several detectors (one IPv4 pattern for public and private
# addresses): validates the candidate once and answers which detector it belongs to, or None.
Kind = Callable[[bytes, int, int], "str | None"]
# For patterns scanned without start-of-match tracking (it costs several microseconds per
# kilobyte on patterns with a long variable prefix): finds the candidate's start from its end.
Locator = Callable[[bytes, int], int]

PUBLIC_IPV4 = "net.ipv4"
PUBLIC_IPV6 = "net.ipv6"
PRIVATE_IP = "net.private_ip"
IGNORED = "ignored"

_ALNUM = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_DIGITS = frozenset(b"0123456789")
ALNUM = _ALNUM
DIGITS = _DIGITS
HEX = frozenset(b"0123456789abcdefABCDEF")
PHONE_INNER = _ALNUM | frozenset(b"+(")
IPV6_INNER = _ALNUM | frozenset(b":")
B64_CHARS = _ALNUM | frozenset(b"+/=_")
SAS_CHARS = _ALNUM | frozenset(b"%+/=")
_PHONE_CHARS = _ALNUM | frozenset(b"+()")
_NANP_CHARS = _ALNUM | frozenset(b"()")
_IPV4_CHARS = _DIGITS | frozenset(b".")
_IPV6_CHARS = _ALNUM | frozenset(b":.")


def _core(data: bytes, start: int, end: int, inner: frozenset[int] = _ALNUM) -> bytes:
    """The candidate without the boundary characters the pattern consumed around it."""
    if start < end and data[start] not in inner:
        start += 1
    if end > start and data[end - 1] not in inner:
        end -= 1
    return data[start:end]


_NOT_DIGITS = bytes(b for b in range(256) if b not in _DIGITS)


def _digits(value: bytes) -> bytes:
    return value.translate(None, _NOT_DIGITS)


def shannon_entropy(value: bytes) -> float:
    """Bits per symbol of the value's own character distribution."""
    if not value:
        return 0.0
    total = len(value)
    log2 = math.log2
    return -sum([(n / total) * log2(n / total) for n in Counter(value).values()])


# --- financial ---------------------------------------------------------------------------

# Issuer prefixes of the card schemes (Visa, Mastercard incl. 2-series, Amex, Discover, JCB
# incl. the old 15-digit 1800/2131, Diners, UnionPay, Maestro); a Luhn-valid number outside
# them is more likely an id. Card generators and test suites use all of 35xx for JCB.
_CARD_PREFIX = re.compile(
    rb"4|5[1-5]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)|3[47]|6011|64[4-9]|65|35"
    rb"|30[0-5]|3[689]|62|5[06-9]|6[0-9]|1800|2131"
)
# 12-digit numbers only with Maestro's own IINs (a 12-digit number is far more often an
# account id: AWS's are 12 digits); 1800 and 2131 are 15-digit JCB only.
_MAESTRO_12 = re.compile(rb"50(?:18|20|38)|5893|6304|6390|6759|676[1-3]")
_JCB_15 = (b"1800", b"2131")
_HEX_WORD = re.compile(rb"[0-9A-Fa-f]*[A-Fa-f][0-9A-Fa-f]*")


def luhn_ok(number: bytes) -> bool:
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = char - 48
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _hex_dump_neighbour(data: bytes, start: int, end: int, size: int) -> bool:
    """A word of hex digits (with a letter a-f) of the same width as the candidate's groups
    right before or after it: a hex dump row (`6668 7120 ...`), not a card."""
    before = data[max(0, start - size - 2) : start].split()
    after = data[end : end + size + 2].split()
    for words in (before[-1:], after[:1]):
        if words and len(words[0]) == size and _HEX_WORD.fullmatch(words[0]):
            return True
    return False


def payment_card(data: bytes, start: int, end: int) -> bool:
    core = _core(data, start, end, _DIGITS).strip(b" -_")
    number = _digits(core)
    size = len(number)
    if not 12 <= size <= 19 or not _CARD_PREFIX.match(number):
        return False
    if size == 12 and not _MAESTRO_12.match(number):
        return False
    if number.startswith(_JCB_15) and size != 15:
        return False
    if not luhn_ok(number):
        return False
    if len(number) == len(core):
        return True
    groups = core.replace(b"-", b" ").split()
    # Cards are written in groups of 4 (4-6-5, 4-6-4 for Amex and Diners; a 3-digit tail on
    # 19 digits): one- and two-digit groups are byte dumps, dates and lists.
    if min(len(g) for g in groups) < 3:
        return False
    return not _hex_dump_neighbour(data, start, end, len(groups[0]))


# ISO 13616 registry: country code -> IBAN length.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_mod97(iban: str) -> bool:
    """ISO 13616 / ISO 7064 MOD 97-10: move the first four characters to the end, letters to
    numbers (A=10 .. Z=35), and the remainder must be 1."""
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


_IBAN_COUNTRIES = frozenset(country.encode("ascii") for country in IBAN_LENGTHS)


def iban(data: bytes, start: int, end: int) -> bool:
    # The pattern puts the two country letters right after the start boundary: an unregistered
    # country is rejected before any decoding ("AB12 AB12 ..." is one candidate per end).
    first = start + 1 if data[start] not in _ALNUM else start
    if data[first : first + 2].upper() not in _IBAN_COUNTRIES:
        return False
    value = _core(data, start, end).replace(b" ", b"").replace(b"-", b"").decode("ascii").upper()
    if IBAN_LENGTHS.get(value[:2]) != len(value) or not value.isalnum():
        return False
    return iban_mod97(value)


# --- government ids ----------------------------------------------------------------------

# Numbers the SSA has publicly invalidated after they appeared in advertising.
_SSN_PUBLISHED = frozenset({b"078051120", b"219099999"})


def us_ssn(data: bytes, start: int, end: int) -> bool:
    number = _digits(_core(data, start, end, _DIGITS))
    if len(number) != 9 or number in _SSN_PUBLISHED:
        return False
    area, group, serial = number[:3], number[3:5], number[5:]
    return area not in (b"000", b"666") and area[0] != 57 and group != b"00" and serial != b"0000"


_NINO_FIRST_BAD = frozenset("DFIQUV")
_NINO_SECOND_BAD = frozenset("DFIOQUV")
_NINO_PREFIX_BAD = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})


def uk_nino(data: bytes, start: int, end: int) -> bool:
    value = _core(data, start, end).replace(b" ", b"").decode("ascii").upper()
    if len(value) != 9:
        return False
    prefix = value[:2]
    return (
        prefix[0] not in _NINO_FIRST_BAD
        and prefix[1] not in _NINO_SECOND_BAD
        and prefix not in _NINO_PREFIX_BAD
    )


# --- contact -----------------------------------------------------------------------------

# RFC 2606 / RFC 6761 names reserved for documentation and testing: no person is behind them.
_RESERVED_DOMAINS = frozenset({b"example.com", b"example.net", b"example.org"})
_RESERVED_SUFFIXES = tuple(b"." + d for d in sorted(_RESERVED_DOMAINS))
_RESERVED_TLDS = frozenset({b"example", b"test", b"invalid", b"localhost"})
# "icon@2x.png" in code is an asset name, not an address.
_FILE_SUFFIXES = frozenset(
    {b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"ico", b"css", b"js"}
)
# Source file names (`foo-bar@baz.py`, `sd_IN@devanagari.UTF-8`): also country TLDs, so only a
# single-label domain before them reads as a file.
_SOURCE_SUFFIXES = frozenset(
    {b"py", b"md", b"txt", b"json", b"yaml", b"yml", b"rs", b"sh", b"rb", b"ts", b"html", b"xml",
     b"toml", b"cfg", b"ini", b"log", b"lock", b"utf-8", b"utf8"}
)  # fmt: skip


_EMAIL_LOCAL = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._%+-")


def walk_back(allowed: frozenset[int], limit: int) -> Locator:
    """Start of the run of `allowed` bytes ending just before `stop`, at most `limit` long."""
    chars = bytes(sorted(allowed))

    def locate(data: bytes, stop: int) -> int:
        # `rstrip` walks the run in C; 64-byte windows keep a long run linear.
        floor = max(0, stop - limit)
        while stop > floor:
            low = max(floor, stop - 64)
            kept = len(data[low:stop].rstrip(chars))
            if kept:
                return low + kept
            stop = low
        return floor

    return locate


_local_start = walk_back(_EMAIL_LOCAL, 64)  # RFC 5321: a local part has at most 64 octets


def email_start(data: bytes, end: int) -> int:
    # The last byte is the end boundary, which may itself be an `@`.
    return _local_start(data, data.rindex(b"@", 0, end - 1))


def email(data: bytes, start: int, end: int) -> bool:
    value = data[start : end - 1]
    at = value.find(b"@")
    if at <= 0 or value[0] == 46 or value[at - 1] == 46:  # empty, or a dot at an end
        return False
    if _in_url_userinfo(data, start):
        return False
    if (
        data[end - 1] == 58
        and data[end : end + 1] not in (b" ", b"\n", b"")
        and value[:at] == b"git"
    ):
        return False  # `git@github.com:org/repo`: an SSH remote, not an address
    if b"example" in value[:at].lower():
        return False  # `exampleUser@...`: a documentation placeholder
    domain = value[at + 1 :].lower()
    tld = domain[domain.rfind(b".") + 1 :]
    if tld in _FILE_SUFFIXES or tld in _RESERVED_TLDS:
        return False
    if tld in _SOURCE_SUFFIXES and domain.count(b".") == 1:
        return False
    return not (domain in _RESERVED_DOMAINS or domain.endswith(_RESERVED_SUFFIXES))


EMAIL = "pii.email"
EMAIL_ATTRIBUTION = "pii.email_attribution"
# An address credited as a work's author or maintainer, on the same line: published contact
# details in a file header or a commit trailer, not a person's record.
_ATTRIBUTION = (
    b"author", b"maintainer", b"copyright", b"(c)", b"\xc2\xa9", b"written by",
    b"contributed by", b"created by", b"cloned by", b"tweaks by", b"added by", b"signed-off-by",
    b"co-authored-by", b"reviewed-by", b"acked-by", b"tested-by", b"reported-by", b"credits",
    b"thanks to", b"report bugs to", b"__email__", b"author_email", b"maintainer_email",
)  # fmt: skip


def _by_first_byte(words: tuple[bytes, ...]) -> bytes:
    """An alternation of `words` grouped by their first byte (`a(?:uthor|dded by)|c(?:...)`):
    the same matches as the flat alternation, but `re` tries one branch per position where it
    tried every word, ~1.4x faster on prose."""
    groups: dict[bytes, list[bytes]] = {}
    for word in words:
        groups.setdefault(word[:1], []).append(re.escape(word[1:]))
    return b"|".join(
        re.escape(first) + b"(?:" + b"|".join(rests) + b")" for first, rests in groups.items()
    )


# One alternation over the lower-cased window: ~5x faster than testing each word.
_ATTRIBUTION_WORD = re.compile(_by_first_byte(_ATTRIBUTION))
# "by Jane Roe (jane@...)" or "by Jane Roe <jane@...>".
_NAME_WORD = rb"[A-Z][^\s<>()@,:;]*"
_BY_NAME = re.compile(
    rb"(?i:\bby):?[ \t]+" + _NAME_WORD + rb"(?:[ \t,]+" + _NAME_WORD + rb"){0,3}[ \t]*[(<]{1,2}\Z"
)
# "Jane Roe <jane@...>" or "Email: <jane@...>" as the whole of a (comment) line's start.
_NAME = (
    _NAME_WORD
    + rb"(?:[ \t]+(?:"
    + _NAME_WORD
    + rb"|de|da|di|du|del|der|la|le|van|von|bin|al)){0,4}[ \t]*"
)
_HEADER_LINE = re.compile(
    # On a comment line: an address, "Email: address" or "Jane Roe <address>".
    rb"[ \t]*(?:#+|//|/\*+|;+|--|\.\.)[ \t]*(?:(?i:e-?mail|mailto|contact)[ \t]*:[ \t]*)?"
    rb"(?:" + _NAME + rb")?[<(]{0,2}\Z"
    # A list item naming someone: "* Jane Roe <address>" (a bare address in a list is data).
    rb"|[ \t]*[-+*][ \t]*" + _NAME + rb"[<(]{1,2}\Z"
    # On a line of its own: "Jane Roe <address>" (an AUTHORS file, a changelog trailer), or
    # a bracketed address continuing a list of them.
    rb"|[ \t]*" + _NAME + rb"[<(]\Z|[ \t]*[<(]\Z"
)
# What may follow the address on a header line: a closing bracket, a comma, a date.
_HEADER_TAIL = re.compile(rb"[>),]?[ \t,]*(?:[^@\n]{0,40})\n")


def email_kind(data: bytes, start: int, end: int) -> str | None:
    """`pii.email`, or `pii.email_attribution` for an author's address in a header."""
    if not email(data, start, end):
        return None
    # The credit sits just before the address on its line ("Author: Jo <jo@...>").
    newline = data.rfind(b"\n", max(0, start - 80), start)
    line_start = newline + 1 if newline >= 0 else max(0, start - 80)
    if _ATTRIBUTION_WORD.search(data[line_start:start].lower()) is not None:
        return EMAIL_ATTRIBUTION
    domain = data[data.find(b"@", start, end) : end].lower()
    if b"googlegroups." in domain or b"lists." in domain:
        return EMAIL_ATTRIBUTION  # a project's public mailing list, not a person
    if data.find(b"by", line_start, start) >= 0 and _BY_NAME.search(data, line_start, start):
        return EMAIL_ATTRIBUTION
    header = newline >= 0 and _HEADER_LINE.match(data, line_start, start) is not None
    if header and _HEADER_TAIL.match(data, end - 1) is not None:
        return EMAIL_ATTRIBUTION
    return EMAIL


_AUTHORITY_END = re.compile(rb"[/?\s]")


def _in_url_userinfo(data: bytes, start: int) -> bool:
    """True when the candidate sits in the userinfo of a URL (`scheme://user:pass@host`,
    nothing between `://` and it that ends the authority): that is a URL credential, reported
    by its own detector. An address in the path or query (`/lookup?email=jane@...`) counts."""
    scheme = data.rfind(b"://", max(0, start - 256), start)
    return scheme >= 0 and _AUTHORITY_END.search(data, scheme + 3, start) is None


def phone(min_digits: int, max_digits: int) -> Validator:
    def check(data: bytes, start: int, end: int) -> bool:
        number = _digits(_core(data, start, end, _PHONE_CHARS))
        return min_digits <= len(number) <= max_digits

    return check


def nanp_phone(data: bytes, start: int, end: int) -> bool:
    number = _digits(_core(data, start, end, _NANP_CHARS))
    if len(number) == 11:
        number = number[1:]
    # 555-0100..555-0199 are reserved for fiction and documentation.
    return len(number) == 10 and not (number[3:6] == b"555" and number[6:8] == b"01")


# --- network -----------------------------------------------------------------------------


# A dotted quad whose octets are <= 255 and have no leading zeros.
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rb"\.".join([b"(" + _OCTET + b")"] * 4))


def _net(cidr: str) -> tuple[int, int]:
    network = ipaddress.IPv4Network(cidr)
    return int(network.network_address), int(network.broadcast_address)


# RFC 1918, CGNAT (RFC 6598), link-local.
_V4_PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16")
# Not an address of any host: this-network, loopback, documentation (RFC 5737), benchmarking,
# multicast and reserved.
_V4_IGNORED = ("0.0.0.0/8", "127.0.0.0/8", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
               "198.18.0.0/15", "224.0.0.0/3")  # fmt: skip
# The ranges do not overlap: sorted by first address, one bisection finds an address's range.
_V4_RANGES = sorted(
    [(*_net(c), IGNORED) for c in _V4_IGNORED] + [(*_net(c), PRIVATE_IP) for c in _V4_PRIVATE]
)
_V4_FIRST = [first for first, _, _ in _V4_RANGES]


def _v4_kind(number: int) -> str | None:
    """`PRIVATE_IP`, `PUBLIC_IPV4`, or `IGNORED` for addresses of no host."""
    index = bisect.bisect_right(_V4_FIRST, number) - 1
    if index >= 0:
        _, last, kind = _V4_RANGES[index]
        if number <= last:
            return kind
    return PUBLIC_IPV4


_VERSION_WORD = re.compile(
    rb"(?i)\b(?:version|release|firmware|build|ver|rev|revision|sdk|patch|update|python|node"
    rb"|java|ruby|perl|php|golang|kernel)\W{0,3}\Z"
)
# Version pins and package names: `==3.5.0.1`, `~=`, `^`, `pkg-3.5.0.1`, `pkg_3.5.0.1`.
_VERSION_LEAD = frozenset(b"=~^-_")
_VERSION_TAIL_START = frozenset(b"-+")
_VERSION_TAIL = re.compile(
    rb"(?i)[-+](?:rc|alpha|beta|dev|pre|post|snapshot|final|build|b[0-9]|a[0-9])"
)


def _after_version_word(data: bytes, start: int) -> bool:
    if data[start] in _VERSION_LEAD:
        return True
    return _VERSION_WORD.search(data, max(0, start - 12), start + 1) is not None


def ipv4_kind(data: bytes, start: int, end: int) -> str | None:
    """The detector id an IPv4 candidate belongs to (`net.ipv4` or `net.private_ip`), or None
    when it is not a host address (invalid octets, a version number, documentation range)."""
    value = _core(data, start, end, _IPV4_CHARS).strip(b".")
    quad = _DOTTED_QUAD.fullmatch(value)
    if quad is None:
        return None
    a, b, c, d = quad.groups()
    kind = _v4_kind((int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d))
    if kind is IGNORED or _after_version_word(data, start):
        return None
    if data[end - 1] in _VERSION_TAIL_START and _VERSION_TAIL.match(data, end - 1) is not None:
        return None
    return kind


_V6_DOC = ipaddress.IPv6Network("2001:db8::/32")
_V6_ULA = ipaddress.IPv6Network("fc00::/7")


# The whole candidate: a boundary, two to seven groups with their colons, an optional last
# group or dotted quad, a boundary. The scan pattern starts at the first colon.
_IPV6_SHAPE = re.compile(
    rb"[^0-9A-Za-z:.](?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|[0-9]{1,3}(?:\.[0-9]{1,3}){3})?"
    rb"(?:[^0-9A-Za-z:.]|\.[^0-9A-Za-z])\Z"
)


def ipv6_kind(data: bytes, start: int, end: int) -> str | None:
    """As `ipv4_kind`, for IPv6 (`net.ipv6` or `net.private_ip`)."""
    if _IPV6_SHAPE.search(data, max(0, end - 64), end) is None:
        return None
    value = _core(data, start, end, _IPV6_CHARS)
    if value.endswith(b"."):
        value = value[:-1]
    if not any(b in _DIGITS for b in value):
        return None  # "Face::Bead" in code is a scope operator, not an address
    try:
        address = ipaddress.IPv6Address(value.decode("ascii"))
    except ValueError:
        return None
    if address.ipv4_mapped is not None:
        kind = _v4_kind(int(address.ipv4_mapped))
        return PUBLIC_IPV6 if kind is PUBLIC_IPV4 else None if kind is IGNORED else kind
    if address.is_unspecified or address.is_loopback or address.is_multicast or address in _V6_DOC:
        return None
    if address.is_link_local or address.is_site_local or address in _V6_ULA:
        return PRIVATE_IP
    # Only 2000::/3 is routed on the internet; the rest is reserved or unallocated, and what
    # reads as such an address in text is a code slice (`a[1::2]`) or a C++ scope.
    if int(address) >> 125 != 1:
        return None
    return PUBLIC_IPV6


def ipv4_public(data: bytes, start: int, end: int) -> bool:
    return ipv4_kind(data, start, end) == PUBLIC_IPV4


def ipv4_private(data: bytes, start: int, end: int) -> bool:
    return ipv4_kind(data, start, end) == PRIVATE_IP


def ipv6_public(data: bytes, start: int, end: int) -> bool:
    return ipv6_kind(data, start, end) == PUBLIC_IPV6


def ipv6_private(data: bytes, start: int, end: int) -> bool:
    return ipv6_kind(data, start, end) == PRIVATE_IP


# --- credentials -------------------------------------------------------------------------

_TOKEN_CHARS = _ALNUM | frozenset(b"_-")
TOKEN_CHARS = _TOKEN_CHARS
_JWT_CHARS = _TOKEN_CHARS | frozenset(b".")
JWT_CHARS = _JWT_CHARS
_LOWER_BYTES = bytes(range(97, 123))
_UPPER_BYTES = bytes(range(65, 91))
_DIGIT_BYTES = bytes(range(48, 58))
_ALNUM_BYTES = bytes(sorted(_ALNUM))
_HEX_BYTES = bytes(sorted(HEX))


def _has(value: bytes, table: bytes) -> bool:
    # Deleting a class's bytes (in C) shortens the value exactly when the class is present.
    return len(value.translate(None, table)) != len(value)


def _char_classes(value: bytes) -> int:
    return (
        _has(value, _LOWER_BYTES)
        + _has(value, _UPPER_BYTES)
        + _has(value, _DIGIT_BYTES)
        + (len(value.translate(None, _ALNUM_BYTES)) != 0)
    )


def aws_access_key(data: bytes, start: int, end: int) -> bool:
    # AKIAIOSFODNN7EXAMPLE, AKIAEXAMPLE123... : AWS's documentation keys.
    return b"EXAMPLE" not in _core(data, start, end)


def _opaque_key(value: bytes, min_entropy: float) -> bool:
    """A random key: upper case, lower case and digits, and spread-out characters."""
    return (
        _has(value, _UPPER_BYTES)
        and _has(value, _LOWER_BYTES)
        and _has(value, _DIGIT_BYTES)
        and shannon_entropy(value) >= min_entropy
        and not value.endswith(b"EXAMPLEKEY")
    )


def aws_secret_named(data: bytes, start: int, end: int) -> bool | tuple[int, int]:
    """`aws_secret_access_key = <40 characters>`: `start` is unused (no start tracking)."""
    value = data[end - 41 : end - 1]
    if not _opaque_key(value, 4.0):
        return False
    return end - 41, end - 1


_AWS_KEY_ID = re.compile(rb"(?:AKIA|ASIA)[A-Z0-9]{16}")


_AWS_SECRET_RUN = re.compile(rb"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")


def aws_secret_near_id(data: bytes, start: int, end: int) -> bool | tuple[int, int]:
    """Run on an access key id: a 40-character base64 run within 300 bytes of it is its
    secret access key (a pasted credentials file or CSV). The finding is that run. (Found from
    the key id rather than by its own pattern: a literal-free 40-character class pattern made
    every scan measurably slower.)"""
    for match in _AWS_SECRET_RUN.finditer(data, max(0, start - 300), end + 300):
        value = match.group()
        if value.translate(None, _HEX_BYTES) and _opaque_key(value, 4.0):
            return match.span()
    return False


def random_token(min_entropy: float, *, digit: bool = True) -> Validator:
    """Tokens with a fixed prefix: the random part must look random, so that
    `ghp_xxxxxxxx...` placeholders do not count."""

    def check(data: bytes, start: int, end: int) -> bool:
        value = _core(data, start, end, _TOKEN_CHARS)
        body = value.split(b"_", 1)[-1] if value.startswith((b"gh", b"github_pat")) else value
        if digit and not _has(body, _DIGIT_BYTES):
            return False
        if not digit and not (_has(body, _UPPER_BYTES) and _has(body, _LOWER_BYTES)):
            return False
        return shannon_entropy(body) >= min_entropy

    return check


_BASE62 = (
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
)


def _base62(value: bytes, alphabet: bytes) -> int:
    number = 0
    for char in value:
        index = alphabet.find(bytes([char]))
        if index < 0:
            return -1
        number = number * 62 + index
    return number


def crc32_token(data: bytes, start: int, end: int) -> bool:
    """GitHub (`ghp_` ...) and npm (`npm_`) tokens: 30 random base62 characters and a 6
    character base62 CRC32 of them. A typo'd, truncated or made-up token fails the checksum.
    (Both common base62 alphabet orders are accepted.)"""
    value = _core(data, start, end, _TOKEN_CHARS)
    body, check = value[4:-6], value[-6:]
    crc = zlib.crc32(body)
    return any(_base62(check, alphabet) == crc for alphabet in _BASE62)


def openai_key(data: bytes, start: int, end: int) -> bool:
    value = _core(data, start, end, _TOKEN_CHARS)
    if value.startswith(b"sk-ant-"):
        return False  # Anthropic's, reported by its own detector
    body = value.rsplit(b"-", 1)[-1] if value.count(b"-") <= 2 else value[3:]
    return len(body) >= 20 and _opaque_key(value[3:], 3.0)


# Stripe's own documentation key, published in every tutorial.
_STRIPE_DOCS = frozenset({b"sk_test_4eC39HqLyjWDarjtT1zdp7dc", b"sk_test_BQokikJOvBiI2HlWgH4olfQ2"})


def stripe_key(data: bytes, start: int, end: int) -> bool:
    value = _core(data, start, end, B64_CHARS)
    if value in _STRIPE_DOCS:
        return False
    body = value.split(b"_", 2)[-1]
    return _has(body, _DIGIT_BYTES) and shannon_entropy(body) >= 3.0


# The Azure Storage emulator's well-known account key (public, in Microsoft's docs).
_AZURITE_KEY = (
    b"Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_AZURE_VALUE = re.compile(rb"=[ \t]{0,3}([A-Za-z0-9+/]{40,100}={0,2})[^A-Za-z0-9+/=]\Z")


def azure_key(data: bytes, start: int, end: int) -> bool | tuple[int, int]:
    match = _AZURE_VALUE.search(data, max(0, end - 110), end)
    if match is None:
        return False
    value = match.group(1)
    if value == _AZURITE_KEY or shannon_entropy(value) < 4.0:
        return False
    return match.span(1)


_SAS_FIELD = re.compile(rb"[?&;](?:sv|se|sp|sr|spr|srt|ss)=")


def azure_sas(data: bytes, start: int, end: int) -> bool:
    """`sig=` with a percent-encoded base64 HMAC-SHA256 (32 bytes), in a query string that
    also has the SAS version, expiry or permissions fields."""
    value = _core(data, start, end, SAS_CHARS)
    signature = value.split(b"=", 1)[-1] if value.startswith(b"sig=") else value
    decoded = urllib.parse.unquote_to_bytes(signature)
    try:
        raw = base64.b64decode(decoded, validate=True)
    except (ValueError, binascii.Error):
        return False
    if len(raw) != 32:
        return False
    return _SAS_FIELD.search(data, max(0, start - 600), end + 600) is not None


def twilio_key(data: bytes, start: int, end: int) -> bool:
    value = _core(data, start, end)[2:]
    return _has(value, _DIGIT_BYTES) and shannon_entropy(value) >= 3.0


def jwt(data: bytes, start: int, end: int) -> bool:
    value = _core(data, start, end, _JWT_CHARS)
    header = value.split(b".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + b"=" * (-len(header) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


_PEM_BODY = re.compile(rb"(?:[ \t\r\n]|\\[rn])*(?:[A-Za-z-]+:[^\r\n\\]*(?:[\r\n]|\\[rn])+)*"
                       rb"(?:[ \t\r\n]|\\[rn])*[A-Za-z0-9+/=]{40}")  # fmt: skip
_PEM_END = re.compile(rb"-{4,5} ?END [A-Z0-9 ]{0,60}-{4,5}")


def pem_private_key(data: bytes, start: int, end: int) -> bool | tuple[int, int]:
    """The BEGIN line must be followed by key material, not by `...` in documentation. Line
    breaks may be real or JSON-escaped (a key inside tool-call arguments). The finding is the
    whole block, through its END line when there is one."""
    body = _PEM_BODY.match(data, end, end + 1024)
    if body is None:
        return False
    close = _PEM_END.search(data, body.end(), body.end() + 16384)
    stop = close.end() if close is not None else body.end()
    block = data[end : close.start() if close is not None else stop]
    if b"EXAMPLE" in block or b"..." in block:
        return False  # a documentation sample, or a key shortened with "...": not usable
    return start, stop


_PUTTY_BODY = re.compile(rb"Private-Lines:[ \t]*[0-9]+(?:[ \t\r\n]|\\[rn])+[A-Za-z0-9+/=]{40}")


def putty_private_key(data: bytes, start: int, end: int) -> bool | tuple[int, int]:
    body = _PUTTY_BODY.search(data, end, end + 8192)
    return (start, body.end()) if body is not None else False


# --- secrets stated by syntax -------------------------------------------------------------

_PLACEHOLDER_WORDS = (
    b"your", b"example", b"placeholder", b"changeme", b"change_me", b"redacted", b"dummy",
    b"sample", b"xxxx", b"****", b"...", b"getenv", b"environ", b"process.env", b"secret(",
    b"vault:", b"<", b">", b"${", b"{{", b"}}", b"%s", b"%(",
)  # fmt: skip
# Template and variable references: `${X}`, `$(x)`, `{{ x }}`, `%(x)s`, `#{x}`, `<x>`, `$X`, `%X%`.
_REFERENCE_START = (b"<", b"${", b"$(", b"{{", b"%(", b"#{", b"[[")
_REFERENCE = re.compile(rb"\$[A-Za-z_][A-Za-z0-9_]*|%[A-Za-z_][A-Za-z0-9_]*%|\{[A-Za-z0-9_]*\}")
_PLACEHOLDER_WORD = re.compile(b"|".join(re.escape(word) for word in _PLACEHOLDER_WORDS))
_CONSTANT_NAME = re.compile(rb"[A-Z][A-Z0-9_]*")
# A value that names what it stands for ("default_secret_key", "sas-token-for-storage",
# "my-password") describes a secret rather than being one.
_NAMES_A_SECRET = re.compile(rb"password|secret|token|api_?key|omitted|removed")
# Words that are a value's name or type, not the value.
_NOT_VALUES = frozenset(
    b"password passwd passphrase passcode pwd pass secret token apikey api_key key none null nil"
    b" true false undefined nan required optional hidden empty masked string str bytes int bool"
    b" object number boolean secretstr secretbytes any unknown invalid incorrect wrong missing"
    b" blank default value".split()
)
_IDENTIFIER = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED = re.compile(rb"[A-Za-z_$][A-Za-z0-9_$]*(?:\??\.[A-Za-z_$][A-Za-z0-9_$]*)+")
_CAMEL_TYPE = re.compile(rb"[A-Z][A-Za-z]*")
_CODE_CHARS = frozenset(b"()[]{}")
_COMMENT_START = (b"#", b"//", b";", b"--", b"/*", b"<!--")
# Where a line holds a config entry or a shell variable rather than code.
_CONFIG_PREFIXES = (b"", b"export", b"set", b"env", b"-e", b"--env", b"setx", b"declare")


def _reference(value: bytes) -> bool:
    return value.startswith(_REFERENCE_START) or _REFERENCE.fullmatch(value) is not None


def _placeholder(value: bytes) -> bool:
    lowered = value.lower()
    return (
        _reference(value)
        or _PLACEHOLDER_WORD.search(lowered) is not None
        or lowered.strip(b"\"'`") in _NOT_VALUES
        or _NAMES_A_SECRET.search(lowered) is not None
        or (b"_" in value and _CONSTANT_NAME.fullmatch(value) is not None)
        or set(value) <= set(b"*x.-_#?")
    )


def _line_bounds(data: bytes, start: int, end: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", max(0, start - 400), start) + 1 or max(0, start - 400)
    line_end = data.find(b"\n", end, end + 400)
    return line_start, line_end if line_end >= 0 else min(len(data), end + 400)


SECRET_KEYS = (
    rb"password|passwd|passphrase|passcode|pwd|pw|pass|secret|secret[_\-]?key|token|api[_\-]?key|apikey"
    rb"|access[_\-]?key|private[_\-]?key|credentials?"
)
_PASSWORD_KEYS = frozenset(
    {b"password", b"passwd", b"passphrase", b"passcode", b"pwd", b"pw", b"pass"}
)
_SHORT_KEYS = frozenset({b"pwd", b"pw", b"pass"})
# The validator's view of `_SECRET_ASSIGNMENT` (detectors.py), anchored at the candidate end.
_ASSIGN = re.compile(
    rb"(?i)(?=[PpSsTtAaCc])(?P<key>" + SECRET_KEYS + rb")[\"']?(?P<pre>[ \t]*)"
    rb"(?P<sep>:=|=>|[:=])(?P<post>[ \t]*)"
    rb"(?:(?P<q>[bBrRuU]?[\"'`])(?P<qv>[^\"'`\n]{4,200})[\"'`]"
    rb"|(?P<uv>[^\s\"'`,;<>=][^\s\"'`,;<>]{3,})[\s\"'`,;<>])\Z"
)
_VALUE_STOP = frozenset(b" \t\r\n\f\v\"'`,;<>")
_value_run = walk_back(frozenset(range(256)) - _VALUE_STOP, 256)
# Names ending in "token" that are not credentials: pagination cursors, idempotency keys.
_NOT_SECRET_NAME = re.compile(
    rb"(?i)(?:next|page|continuation|pagination|sync|resume|idempotency|client|request|start"
    rb"|starting|marker|cursor|change|etag|delete|end|update)[_\-]?(?:page[_\-]?)?token\Z"
)
_IDENT_CHARS = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-.")
_ident_start = walk_back(_IDENT_CHARS, 80)


def _strong(value: bytes) -> bool:
    """What an opaque token (not a password) must look like to count: long enough, several
    character classes, spread out."""
    return len(value) >= 8 and _char_classes(value) >= 2 and shannon_entropy(value) >= 3.0


def _unquoted_literal(
    data: bytes, value: bytes, start: int, end: int, *, sep: bytes, spaced: bool
) -> bool:
    """Whether an unquoted right-hand side is a literal, from the syntax around it."""
    if any(char in _CODE_CHARS for char in value) or value.startswith((b"!", b"&", b"*")):
        return False  # a call, index, literal structure, template, or YAML tag/anchor/alias
    if value.lower() in _NOT_VALUES or _DOTTED.fullmatch(value) or _reference(value):
        return False
    if value.endswith(b".") and _IDENTIFIER.fullmatch(value[:-1]):
        return False  # `obj.` an attribute access that goes on
    if sep == b":" and _CAMEL_TYPE.fullmatch(value):
        return False  # a type annotation (`token: Token`)
    line_start, line_end = _line_bounds(data, start, end)
    rest = data[end:line_end].strip()
    if spaced and rest and not rest.startswith(_COMMENT_START):
        return False  # more expression follows (`password = a + b`, `x if y else z`)
    if _IDENTIFIER.fullmatch(value):
        # A bare identifier is a variable unless the line is a config entry, or the value
        # reads like a password (letters and digits, no snake_case).
        if data[end : end + 1] in (b",", b")"):
            return False  # a keyword argument: `login(password=pw, ...)`
        lead = data[line_start:start].strip().lower()
        head = lead.split()[0] if lead.split() else b""
        config = not spaced and (len(lead.split()) <= 1 or head in _CONFIG_PREFIXES)
        passwordish = b"_" not in value and _has(value, _DIGIT_BYTES)
        if not (config or passwordish) or (_CONSTANT_NAME.fullmatch(value) and not passwordish):
            return False
    return True


def secret_assignment(data: bytes, start: int, end: int) -> bool | tuple[int, int]:
    """`key = value` where the key names a secret and the value is a literal (not a variable,
    attribute, call, type, environment lookup or template). `start` is unused."""
    # The value runs back from the end to its opening quote or to a stop character; the key
    # and separator sit a few dozen bytes before that, so the regex runs on a short window.
    last = data[end - 1 : end]
    if last in b"\"'`" and last:
        opening = data.rfind(last, max(0, end - 203), end - 1)
        floor = opening if opening >= 0 else end - 203
    else:
        floor = _value_run(data, end - 1)
    match = _ASSIGN.search(data, max(0, floor - 64), end)
    if match is None and last in b"\"'`" and last:
        floor = _value_run(data, end - 1)  # an unquoted value ended by a quote
        match = _ASSIGN.search(data, max(0, floor - 64), end)
    if match is None:
        return False
    key = match.group("key").lower()
    key_start = match.start("key")
    if key.replace(b"-", b"_") in _SHORT_KEYS or len(key) <= 4:
        before = data[key_start - 1 : key_start]
        if before.isalnum():
            return False  # `bypass`, `compass`: a word ending in the key
    ident_start = _ident_start(data, key_start)
    password = key in _PASSWORD_KEYS
    if not password and _NOT_SECRET_NAME.search(data, ident_start, match.end("key")):
        return False  # a pagination cursor or idempotency token, not a credential
    sep = match.group("sep")
    spaced = bool(match.group("pre") or match.group("post"))
    if match.group("qv") is not None:
        value_start, value_end = match.span("qv")
        value = match.group("qv")
        after = data[end : end + 12].lstrip(b" \t")
        if after[:1] in (b"+", b"%", b".") or after.startswith(b"||"):
            return False  # concatenated or formatted: a template, not the value
    else:
        value_start, value_end = match.span("uv")
        value = match.group("uv")
        if not _unquoted_literal(data, value, ident_start, value_end, sep=sep, spaced=spaced):
            return False
    if _placeholder(value):
        return False
    if password:
        if len(value) < 6:
            return False
    elif not _strong(value):
        return False
    return value_start, value_end


_PROSE_KEYS = frozenset({b"password", b"passwd", b"passphrase", b"passcode", b"pwd", b"pw"})
_PROSE_VERBS = frozenset({b"is", b"was", b"are", b"be", b"is:", b"was:", b"are:", b"be:"})
_PROSE_FILLERS = frozenset({b"now", b"still", b"just"})
_WORD_EDGE = b"\"'`(),.;:!?*_[]{}<>"


def _prose_value(data: bytes, start: int, end: int) -> tuple[int, int] | None:
    """A stated password: quoted, or shaped like one (digits, symbols or inner capitals);
    "password is required" or "is stored in the vault" are statements about one."""
    value = data[start:end]
    if value[-1:] in (b".", b",", b";", b")", b":") and len(value) > 1:
        end -= 1
        value = value[:-1]
    quoted = value[:1] in (b'"', b"'", b"`") and value[-1:] == value[:1] and len(value) > 2
    if quoted:
        start, end, value = start + 1, end - 1, value[1:-1]
        if len(value) < 4:
            return None
    else:
        if len(value) < 6:
            return None
        shaped = (
            _has(value, _DIGIT_BYTES)
            or len(value.translate(None, _ALNUM_BYTES)) > 0
            or _has(value[1:], _UPPER_BYTES)
        )
        if not shaped or (_CONSTANT_NAME.fullmatch(value) and not _has(value, _DIGIT_BYTES)):
            return None
    if _placeholder(value) or _DOTTED.fullmatch(value) or any(c in _CODE_CHARS for c in value):
        return None
    return start, end


def password_prose(data: bytes, start: int, end: int) -> bool | tuple[int, int]:
    """`password ... is <value>`: read backwards from the value (no regex over a window, so
    a text of nothing but "password is password is ..." stays cheap)."""
    stop = end - 1
    value_start = data.rfind(b" ", max(0, stop - 201), stop) + 1
    tab = data.rfind(b"\t", max(0, stop - 201), stop) + 1
    value_start = max(value_start, tab)
    if value_start <= 0 or stop - value_start < 4:
        return False
    words = data[max(0, value_start - 200) : value_start].split()
    if not words:
        return False
    index = len(words) - 1
    if words[index].lower() in _PROSE_FILLERS:
        index -= 1
    if index < 0 or words[index].lower() not in _PROSE_VERBS:
        return False
    if words[index].lower() in (b"be", b"be:") and (
        index < 1 or words[index - 1].lower() != b"will"
    ):
        return False
    # The key within the five words before the verb.
    for word in words[max(0, index - 5) : index]:
        if word.strip(_WORD_EDGE).lower() in _PROSE_KEYS:
            return _prose_value(data, value_start, stop) or False
    return False


_CLI = re.compile(
    rb"(?:[ \t]-p(?P<mysql>[^\s\-][^\s]{2,200})"
    rb"|sshpass[ \t]+-p[ \t]*(?P<sshpass>[^\s\-][^\s]{2,200})"
    rb"|--(?:password|passwd|pass|db-password|admin-password|root-password)(?:=|[ \t]+)"
    rb"(?P<flag>[^\s\-][^\s]{2,200})|[ \t]-[aw][ \t]+(?P<short>[^\s\-][^\s]{2,200})"
    rb"|[ \t]-p[ \t]+(?P<docker>[^\s\-][^\s]{2,200})"
    rb")\s\Z"
    rb"|(?:[ \t]-u|--user)[ \t]*[\"']?[^\s:\"']{1,64}:(?P<curl>[^\s\"']{3,200})[\s\"']\Z"
)


def password_cli(data: bytes, start: int, end: int) -> bool | tuple[int, int]:
    """A password given on a command line (the pattern names the commands)."""
    match = _CLI.search(data, max(0, end - 260), end)
    if match is None:
        return False
    name = match.lastgroup
    if name is None:
        return False
    value_start, value_end = match.span(name)
    value = data[value_start:value_end]
    if value[:1] in b"\"'" and value[-1:] == value[:1] and len(value) > 2:
        value_start, value_end, value = value_start + 1, value_end - 1, value[1:-1]
    if _placeholder(value) or _CONSTANT_NAME.fullmatch(value) or b"$" in value:
        return False
    return value_start, value_end


_AUTH_VALUE = re.compile(
    rb"(?i)(?P<scheme>bearer|basic|token|bot|digest|apikey|sso-key)[ \t]+"
    rb"(?P<v>[A-Za-z0-9\-._~+/=:]{8,500})[^A-Za-z0-9\-._~+/=:]\Z"
)


def authorization_header(data: bytes, start: int, end: int) -> bool | tuple[int, int]:
    """`Authorization: Bearer <token>` / `Basic <base64 user:password>` with a literal value."""
    match = _AUTH_VALUE.search(data, max(0, end - 520), end)
    if match is None:
        return False
    scheme = match.group("scheme").lower()
    value = match.group("v")
    if _placeholder(value) or scheme == b"digest":
        return False
    if scheme == b"basic":
        try:
            pair = base64.b64decode(value, validate=True)
        except (ValueError, binascii.Error):
            return False
        if b":" not in pair or pair.endswith(b":"):
            return False
    elif not (_strong(value) and (len(value) >= 16 or _has(value, _DIGIT_BYTES))):
        return False
    return match.span("v")


_NETRC_VALUE = re.compile(rb"password[ \t]+(?P<v>[^\s]{1,200})\s\Z")


def netrc(data: bytes, start: int, end: int) -> bool | tuple[int, int]:
    match = _NETRC_VALUE.search(data, max(0, end - 220), end)
    if match is None or _placeholder(match.group("v")):
        return False
    return match.span("v")


_PGPASS_LINE = re.compile(
    rb"[A-Za-z0-9.\-*\[\]]{1,253}:(?:[0-9]{1,5}|\*):[^:\s]{1,63}:[^:\s]{1,63}:"
)


def pgpass(data: bytes, start: int, end: int) -> bool | tuple[int, int]:
    stop = end - 1
    if data[stop - 1 : stop] == b"\r":
        stop -= 1
    line_start = (
        max(data.rfind(b"\n", max(0, stop - 900), stop), data.rfind(b" ", max(0, stop - 900), stop))
        + 1
    )
    head = _PGPASS_LINE.match(data, line_start, stop)
    if head is None:
        return False
    fields = data[line_start:stop].split(b":")
    password = data[head.end() : stop]
    if password.replace(b"\\:", b"").count(b":"):
        return False  # more fields than a .pgpass line has (an IPv6 address, a time)
    if len(password) < 4 or _placeholder(password) or all(f.isdigit() for f in fields):
        return False
    host = fields[0]
    named = any(c.isalpha() for c in host.decode("ascii", "replace"))
    if not named and host != b"*" and host.count(b".") != 3:
        return False  # neither a host name, an address nor a wildcard
    return head.end(), stop


_URL_PASSWORD_PLACEHOLDERS = frozenset(
    {b"password", b"pass", b"passwd", b"pwd", b"secret", b"changeme", b"***", b"xxx"}
)


# A scheme: a letter and 1-20 scheme characters, not the tail of a longer run of them.
_SCHEME = re.compile(rb"[^A-Za-z0-9+.\-][A-Za-z][A-Za-z0-9+.\-]{1,20}\Z")


def url_credentials(data: bytes, start: int, end: int) -> bool | tuple[int, int]:
    """`start` is unused: the userinfo runs from the last `://` to the `@` before the end.
    The finding is the password."""
    scheme_end = data.rfind(b"://", max(0, end - 420), end)
    if scheme_end < 0 or _SCHEME.search(data, max(0, scheme_end - 22), scheme_end) is None:
        return False
    userinfo = data[scheme_end + 3 : end - 2]
    colon = userinfo.find(b":")
    password = userinfo[colon + 1 :]
    if not password or password.lower() in _URL_PASSWORD_PLACEHOLDERS:
        return False
    if _reference(password) or set(password) <= set(b"*x"):
        return False
    first = scheme_end + 3 + colon + 1
    return first, first + len(password)


# --- encodings -----------------------------------------------------------------------------

_BASE64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-")
_base64_run = walk_back(_BASE64_CHARS, 1 << 22)
_BASE64_MAX = 1 << 20
_WHITESPACE = b"\n\r\t"


def base64_start(data: bytes, end: int) -> int:
    stop = end - 1
    while stop > 0 and data[stop - 1] == 61:  # "=" padding
        stop -= 1
    return _base64_run(data, stop)


def base64_text(data: bytes, start: int, stop: int) -> str | None:
    """The decoded text of a base64 token when it decodes to printable UTF-8 (a pasted config
    blob, a basic-auth pair); None for binary, identifiers and anything else."""
    token = data[start:stop].rstrip(b"=")
    if not 20 <= len(token) <= _BASE64_MAX or len(token) % 4 == 1:
        return None
    if not (_has(token, _UPPER_BYTES) and _has(token, _LOWER_BYTES)):
        return None
    urlsafe = b"-" in token or b"_" in token
    if urlsafe and (b"+" in token or b"/" in token):
        return None
    padded = token + b"=" * (-len(token) % 4)
    try:
        raw = base64.b64decode(padded, altchars=b"-_" if urlsafe else None, validate=True)
        text = raw.decode("utf-8")
    except (ValueError, binascii.Error):
        return None
    if len(text) < 8 or not text.translate({ord(c): None for c in "\n\r\t"}).isprintable():
        return None
    return text
