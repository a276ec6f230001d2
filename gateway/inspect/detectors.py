"""The built-in detectors: id, default level, Hyperscan patterns and validator.

Patterns carry their own boundaries as consumed character classes (Hyperscan has no
lookaround): a number must not be the middle of a longer number, a token not the middle of a
longer token. That keeps a long run of digits from producing a candidate at every offset, so
the callback count stays proportional to real candidates. The scanned buffer is padded with a
newline on both sides, so the classes also match at the ends of the text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import InspectionConfig
from gateway.inspect import national_ids, phones
from gateway.inspect import validators as v
from gateway.levels import Level


@dataclass(frozen=True, slots=True)
class Builtin:
    id: str
    level: Level
    patterns: tuple[bytes, ...]
    validator: v.Validator | None
    caseless: bool = False
    # Start-of-match tracking is exact but slow on long variable prefixes; those detectors
    # find their start from the end instead (`locate`) or need none (start = end).
    som: bool = True
    locate: v.Locator | None = None
    # Instead of `validator`: a pattern shared by several detectors, validated once per
    # candidate, answering which of them it belongs to. A detector whose candidates are all
    # found by another one's `kind` has no patterns of its own.
    kind: v.Kind | None = None
    # Hyperscan builds one engine per database: a few patterns anchored on a rare literal
    # (`@`, `:`) scan far faster in a database of their own than mixed with the rest.
    database: int = 0
    # Instead of `validator`: builds it from the inspection config (phone regions).
    configure: Callable[[InspectionConfig], v.Validator] | None = None


# Country code, check digits, then 11..30 alphanumerics in optional groups. Every possible end
# is reported and the validator picks the one that matches the country's registered length, so
# an upper-case word right after the IBAN does not hide it. (Registered country codes or
# per-country lengths inside the pattern were tried: the 2 KB scan went from ~7 to 20-50 us.)
_IBAN = rb"[^0-9A-Za-z][A-Za-z]{2}[0-9]{2}(?: ?[0-9A-Za-z]){11,30}[^0-9A-Za-z]"

# Every card-scheme issuer prefix (checked in full by `v.payment_card`) starts with 2-6: a run
# of other digits ("1 1 1 ...") gives no candidate. The exact prefixes as a pattern scan slower.
_CARD = rb"[^0-9A-Za-z_.\-][2-6](?:[ \-]?[0-9]){12,18}(?:[^0-9A-Za-z_.\-]|[.\-][^0-9])"
_SSN = rb"[^0-9A-Za-z\-](?:[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3} [0-9]{2} [0-9]{4})[^0-9A-Za-z\-]"
_NINO = rb"[^0-9A-Za-z][A-Za-z]{2} ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-Da-d][^0-9A-Za-z]"
# From the `@` on: a literal anchors the scan; the local part is found by walking back.
_EMAIL = rb"@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}[^A-Za-z0-9]"
# Phone candidates; `phones.PhoneValidator` (libphonenumber) decides. Each may end in an
# extension (`x1234`, `ext. 12`, `#12`); every end is reported and the longest valid one counts.
_PHONE_EXT = rb"(?:[ ]?(?:[xX#]|[eE][xX][tT]\.?|extension)[ ]?[0-9]{1,6})?"
_PHONE_INTL = (
    rb"[^0-9A-Za-z+/.\-](?:\+|00|011[ .\-]?)[1-9][0-9]{0,2}(?:[ .\-]?\(?[0-9]{1,8}\)?){1,6}"
    + _PHONE_EXT
    + rb"[^0-9A-Za-z]"
)
_PHONE_NANP = (
    rb"[^0-9A-Za-z+\-./](?:1[ .\-])?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .\-])"
    rb"[2-9][0-9]{2}[ .\-][0-9]{4}" + _PHONE_EXT + rb"[^0-9A-Za-z]"
)
_PHONE_TRUNK = (
    rb"[^0-9A-Za-z+\-./:]\(?0[1-9][0-9]{0,3}\)?(?:[ \-][0-9]{2,8}){1,4}"
    + _PHONE_EXT
    + rb"(?:[^0-9A-Za-z\-:./]|[.][^0-9])"
)
# Brazil's `(11) 98765-4321`, `86 6232-8601`: area code without a trunk zero.
_PHONE_BR = rb"[^0-9A-Za-z+\-./:]\(?[1-9][0-9]\)? 9?[2-9][0-9]{3}-[0-9]{4}[^0-9A-Za-z\-]"
# Shapes ids share: 7-digit local numbers, unseparated national numbers (only after a phone
# word: `PhoneValidator(cue=True)`).
_PHONE_LOCAL = rb"[^0-9A-Za-z+\-./:][2-9][0-9]{2}[\-.][0-9]{4}" + _PHONE_EXT + rb"[^0-9A-Za-z\-]"
_PHONE_PLAIN = rb"[^0-9A-Za-z+\-./:][0-9]{7,12}" + _PHONE_EXT + rb"[^0-9A-Za-z\-]"
# Ten digits in NANP groups whatever the area code; eight-digit locals (`5527 9357`).
_PHONE_GROUPED = (
    rb"[^0-9A-Za-z+\-./:](?:1 ?)?\(?[0-9]{3}\)?[ .\-]?[0-9]{3}[ .\-][0-9]{4}"
    + _PHONE_EXT
    + rb"[^0-9A-Za-z\-]"
)
_PHONE_EIGHT = rb"[^0-9A-Za-z+\-./:][0-9]{4}[ .\-][0-9]{4}" + _PHONE_EXT + rb"[^0-9A-Za-z\-.]"
_IPV4 = (
    rb"[^0-9A-Za-z.][0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?:[^0-9A-Za-z.]|\.[^0-9A-Za-z])"
)
# From the first `:` on: a literal anchors the scan (the leading group is found by walking
# back, and `v.ipv6_kind` checks the whole address shape, leading boundary included).
_IPV6 = (
    rb":(?:[0-9A-Fa-f]{0,4}:){1,6}(?:[0-9A-Fa-f]{1,4}|[0-9]{1,3}(?:\.[0-9]{1,3}){3})?"
    rb"(?:[^0-9A-Za-z:.]|\.[^0-9A-Za-z])"
)
_AWS = rb"[^0-9A-Za-z](?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}[^0-9A-Za-z]"
_PEM = rb"-----BEGIN[A-Z0-9 ]{0,40} PRIVATE KEY-----"
_JWT = (
    rb"[^0-9A-Za-z_\-]eyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*"
    rb"(?:[^0-9A-Za-z_\-.]|\.[^0-9A-Za-z_\-])"
)
_GITHUB = (
    rb"[^0-9A-Za-z_](?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{82,240})[^0-9A-Za-z_]"
)
_SLACK = (
    rb"[^0-9A-Za-z](?:xox[abposre]-[0-9A-Za-z\-]{10,}|xapp-[0-9]-[0-9A-Za-z\-]{10,})"
    rb"[^0-9A-Za-z\-]"
)
_SLACK_WEBHOOK = (
    rb"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9_/]{20,200}[^A-Za-z0-9_/]"
)
_SECRET_ASSIGNMENT = rb"[^A-Za-z]" + v.ASSIGNMENT + rb"[^\s\"'`,;<>]{8,}[\s\"'`,;<>]"
# From the `://` on: the scheme before it is checked by `v.url_credentials`.
_URL_CREDENTIALS = rb"://[^\s:/@\"'<>]{0,200}:[^\s/@\"'<>]{1,200}@[A-Za-z0-9.\-\[]"

_v6_run = v.walk_back(frozenset(b"0123456789ABCDEFabcdef:."), 48)


def _V6_START(data: bytes, end: int) -> int:
    return _v6_run(data, end - 1)  # the last byte is the end boundary


BUILTINS: tuple[Builtin, ...] = (
    Builtin(
        "pii.email",
        Level.CONFIDENTIAL,
        (_EMAIL,),
        v.email,
        som=False,
        locate=v.email_start,
        database=1,
    ),
    Builtin(
        "pii.phone",
        Level.CONFIDENTIAL,
        (_PHONE_INTL, _PHONE_NANP, _PHONE_TRUNK, _PHONE_BR),
        None,
        configure=phones.validator,
    ),
    Builtin(
        "pii.phone",
        Level.CONFIDENTIAL,
        (_PHONE_LOCAL, _PHONE_PLAIN, _PHONE_GROUPED, _PHONE_EIGHT),
        None,
        configure=phones.cued_validator,
    ),
    Builtin("gov.us_ssn", Level.RESTRICTED, (_SSN,), v.us_ssn),
    Builtin("gov.uk_nino", Level.RESTRICTED, (_NINO,), v.uk_nino),
    Builtin("fin.payment_card", Level.RESTRICTED, (_CARD,), v.payment_card),
    Builtin("fin.iban", Level.CONFIDENTIAL, (_IBAN,), v.iban),
    # One pattern per address family; `kind` says public (net.ipv4 / net.ipv6) or private.
    Builtin("net.ipv4", Level.INTERNAL, (_IPV4,), None, kind=v.ipv4_kind),
    Builtin(
        "net.ipv6",
        Level.INTERNAL,
        (_IPV6,),
        None,
        som=False,
        locate=_V6_START,
        kind=v.ipv6_kind,
        database=1,
    ),
    Builtin("net.private_ip", Level.INTERNAL, (), None),
    Builtin("secret.aws_access_key", Level.RESTRICTED, (_AWS,), v.aws_access_key),
    Builtin("secret.private_key", Level.RESTRICTED, (_PEM,), v.pem_private_key),
    Builtin("secret.jwt", Level.RESTRICTED, (_JWT,), v.jwt),
    Builtin("secret.github_token", Level.RESTRICTED, (_GITHUB,), v.random_token(3.0)),
    Builtin("secret.slack_token", Level.RESTRICTED, (_SLACK,), v.random_token(3.0)),
    Builtin("secret.slack_token", Level.RESTRICTED, (_SLACK_WEBHOOK,), None),
    Builtin(
        "secret.assignment",
        Level.RESTRICTED,
        (_SECRET_ASSIGNMENT,),
        v.secret_assignment(3.0),
        caseless=True,
        som=False,
    ),
    Builtin(
        "secret.url_credentials",
        Level.RESTRICTED,
        (_URL_CREDENTIALS,),
        v.url_credentials,
        som=False,
    ),
)

# National identifiers checked by python-stdnum (DE, FR, ES, IT, NL, IN, CA, BR).
BUILTINS += tuple(
    Builtin(detector, Level.RESTRICTED, (pattern,), check)
    for detector, pattern, check in national_ids.DETECTORS
)

BUILTIN_IDS: frozenset[str] = frozenset(b.id for b in BUILTINS)

# The detectors a `kind` pattern of the key detector may answer with.
KINDS: dict[str, frozenset[str]] = {
    "net.ipv4": frozenset({"net.ipv4", "net.private_ip"}),
    "net.ipv6": frozenset({"net.ipv6", "net.private_ip"}),
}

# A candidate of the key detector that lies inside an accepted finding of one of the listed,
# more specific detectors is not counted: `049-01-9104` passed the SSN rules, so it is an SSN,
# not also a phone number; a digit group inside an IBAN or a card number is not a phone.
SUBSUMED_BY: dict[str, frozenset[str]] = {
    "pii.phone": frozenset({"gov.us_ssn", "gov.uk_nino", "fin.payment_card", "fin.iban"})
    | national_ids.IDS,
}
