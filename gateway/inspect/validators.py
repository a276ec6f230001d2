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
from collections import Counter
from collections.abc import Callable

Validator = Callable[[bytes, int, int], bool]
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

# Issuer prefixes of the card schemes (Visa, Mastercard incl. 2-series, Amex, Discover, JCB,
# Diners, UnionPay, Maestro); a Luhn-valid number outside them is more likely an id.
_CARD_PREFIX = re.compile(
    rb"4|5[1-5]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)|3[47]|6011|64[4-9]|65|35(?:2[89]|[3-8]\d)"
    rb"|30[0-5]|3[689]|62|5[06-9]|6[0-9]"
)


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


def payment_card(data: bytes, start: int, end: int) -> bool:
    number = _digits(_core(data, start, end))
    return 13 <= len(number) <= 19 and bool(_CARD_PREFIX.match(number)) and luhn_ok(number)


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
    value = _core(data, start, end).replace(b" ", b"").decode("ascii").upper()
    if IBAN_LENGTHS.get(value[:2]) != len(value) or not value.isalnum():
        return False
    return iban_mod97(value)


# --- government ids ----------------------------------------------------------------------

# Numbers the SSA has publicly invalidated after they appeared in advertising.
_SSN_PUBLISHED = frozenset({b"078051120", b"219099999"})


def us_ssn(data: bytes, start: int, end: int) -> bool:
    number = _digits(_core(data, start, end))
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
    domain = value[at + 1 :].lower()
    tld = domain[domain.rfind(b".") + 1 :]
    if tld in _FILE_SUFFIXES or tld in _RESERVED_TLDS:
        return False
    return not (domain in _RESERVED_DOMAINS or domain.endswith(_RESERVED_SUFFIXES))


def _in_url_userinfo(data: bytes, start: int) -> bool:
    """True when the candidate sits after `scheme://user:` in the same token: that is a URL
    credential, reported by its own detector, not an e-mail address."""
    scheme = data.rfind(b"://", max(0, start - 256), start)
    return scheme >= 0 and len(data[scheme:start].split()) == 1


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


_VERSION_WORD = re.compile(rb"(?i)(?:version|release|firmware)\W{0,3}\Z")


def _after_version_word(data: bytes, start: int) -> bool:
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
_JWT_CHARS = _TOKEN_CHARS | frozenset(b".")


def aws_access_key(data: bytes, start: int, end: int) -> bool:
    # AKIAIOSFODNN7EXAMPLE and friends are AWS's documentation keys.
    return not _core(data, start, end).endswith(b"EXAMPLE")


def random_token(min_entropy: float) -> Validator:
    """Tokens with a fixed prefix: the random part must look random, so that
    `ghp_xxxxxxxx...` placeholders do not count."""

    def check(data: bytes, start: int, end: int) -> bool:
        value = _core(data, start, end, _TOKEN_CHARS)
        body = value.split(b"_", 1)[-1] if value.startswith((b"gh", b"github_pat")) else value
        return any(b in _DIGITS for b in body) and shannon_entropy(body) >= min_entropy

    return check


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


def pem_private_key(data: bytes, start: int, end: int) -> bool:
    """The BEGIN line must be followed by key material, not by `...` in documentation. Line
    breaks may be real or JSON-escaped (a key inside tool-call arguments)."""
    return _PEM_BODY.match(data, end, end + 1024) is not None


_PLACEHOLDER_WORDS = (
    b"your", b"example", b"placeholder", b"changeme", b"redacted", b"dummy", b"sample",
    b"xxxx", b"****", b"...", b"getenv", b"environ", b"process.env", b"secret(", b"vault:",
)  # fmt: skip
# Template and variable references: `${X}`, `$(x)`, `{{ x }}`, `%(x)s`, `#{x}`, `<x>`, `$X`, `%X%`.
_REFERENCE_START = (b"<", b"${", b"$(", b"{{", b"%(", b"#{", b"[[")
_REFERENCE = re.compile(rb"\$[A-Za-z_][A-Za-z0-9_]*|%[A-Za-z_][A-Za-z0-9_]*%")
_PLACEHOLDER_WORD = re.compile(b"|".join(re.escape(word) for word in _PLACEHOLDER_WORDS))
_CONSTANT_NAME = re.compile(rb"[A-Z][A-Z0-9_]*")


def _reference(value: bytes) -> bool:
    return value.startswith(_REFERENCE_START) or _REFERENCE.fullmatch(value) is not None


def _placeholder(value: bytes) -> bool:
    lowered = value.lower()
    return (
        _reference(value)
        or _PLACEHOLDER_WORD.search(lowered) is not None
        or _CONSTANT_NAME.fullmatch(value) is not None
    )


_LOWER_BYTES = bytes(range(97, 123))
_UPPER_BYTES = bytes(range(65, 91))
_DIGIT_BYTES = bytes(range(48, 58))
_ALNUM_BYTES = bytes(sorted(_ALNUM))


def _char_classes(value: bytes) -> int:
    # Deleting a class's bytes (in C) shortens the value exactly when the class is present.
    size = len(value)
    return (
        (len(value.translate(None, _LOWER_BYTES)) != size)
        + (len(value.translate(None, _UPPER_BYTES)) != size)
        + (len(value.translate(None, _DIGIT_BYTES)) != size)
        + (len(value.translate(None, _ALNUM_BYTES)) != 0)
    )


SECRET_KEYS = (
    rb"password|passwd|passphrase|pwd|secret|client[_\-]?secret|secret[_\-]?key|api[_\-]?key"
    rb"|apikey|access[_\-]?key|access[_\-]?token|auth[_\-]?token|private[_\-]?key|token"
)
ASSIGNMENT = rb"(?:" + SECRET_KEYS + rb")[\"']?[ \t]*(?::=|=>|[:=])[ \t]*[\"']?"
# The lookahead (every key's first letter) lets `re` skip most positions cheaply: ~3x faster.
_ASSIGNMENT = re.compile(rb"(?=[PpSsCcAaTt])" + ASSIGNMENT, re.IGNORECASE)
_VALUE_STOP = frozenset(b" \t\r\n\f\v\"'`,;<>")
_value_run = walk_back(frozenset(range(256)) - _VALUE_STOP, 1 << 20)


def secret_assignment(min_entropy: float) -> Validator:
    """`start` is unused: the value runs from the last `key =` before the end boundary."""

    def check(data: bytes, start: int, end: int) -> bool:
        stop = end - 1
        # The key, quotes and spaces sit at most a few dozen bytes before the value's run.
        last = None
        for last in _ASSIGNMENT.finditer(data, max(0, _value_run(data, stop) - 80), stop):  # noqa: B007
            pass
        if last is None:
            return False
        value = data[last.end() : stop]
        return (
            len(value) >= 8
            and _char_classes(value) >= 2
            and not _placeholder(value)
            and shannon_entropy(value) >= min_entropy
        )

    return check


_URL_PASSWORD_PLACEHOLDERS = frozenset(
    {b"password", b"pass", b"passwd", b"pwd", b"secret", b"changeme", b"***", b"xxx"}
)


# A scheme: a letter and 1-20 scheme characters, not the tail of a longer run of them.
_SCHEME = re.compile(rb"[^A-Za-z0-9+.\-][A-Za-z][A-Za-z0-9+.\-]{1,20}\Z")


def url_credentials(data: bytes, start: int, end: int) -> bool:
    """`start` is unused: the userinfo runs from the last `://` to the `@` before the end."""
    scheme_end = data.rfind(b"://", max(0, end - 420), end)
    if scheme_end < 0 or _SCHEME.search(data, max(0, scheme_end - 22), scheme_end) is None:
        return False
    userinfo = data[scheme_end + 3 : end - 2]
    password = userinfo.split(b":", 1)[-1]
    if not password or password.lower() in _URL_PASSWORD_PLACEHOLDERS:
        return False
    return not (_reference(password) or set(password) <= set(b"*x"))
