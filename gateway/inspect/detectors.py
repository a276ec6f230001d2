"""The built-in detectors: id, default level, Hyperscan patterns and validator.

Patterns carry their own boundaries as consumed character classes (Hyperscan has no
lookaround): a number must not be the middle of a longer number, a token not the middle of a
longer token. That keeps a long run of digits from producing a candidate at every offset, so
the callback count stays proportional to real candidates. The scanned buffer is padded with a
newline on both sides, so the classes also match at the ends of the text. A boundary before a
number (or before letters) is a `Led` lead: checked in Python, not scanned, because it would
keep Hyperscan from skipping over prose (see `gateway.inspect.leads`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import InspectionConfig
from gateway.inspect import national_ids, phones
from gateway.inspect import validators as v
from gateway.inspect.leads import Lead, Led, led
from gateway.levels import Level


@dataclass(frozen=True, slots=True)
class Builtin:
    id: str
    level: Level
    patterns: tuple[bytes | Led, ...]
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
    # Characters a finding keeps at its ends: the pattern's boundary characters are trimmed
    # from the location (validators that know the exact value span return it instead).
    inner: frozenset[int] = v.ALNUM
    # Instead of `validator`: builds it from the inspection config (phone regions).
    configure: Callable[[InspectionConfig], v.Validator] | None = None


# Country code, check digits, then 11..30 alphanumerics in optional groups (space or dash).
# Every possible end is reported and the validator picks the one that matches the country's
# registered length, so an upper-case word right after the IBAN does not hide it. (Registered
# country codes or per-country lengths inside the pattern were tried: the 2 KB scan went from
# ~7 to 20-50 us.)
_IBAN = led(rb"[^0-9A-Za-z]", rb"[A-Za-z]{2}[0-9]{2}(?:[ \-]?[0-9A-Za-z]){11,30}[^0-9A-Za-z]")

# A label glued to a number by a dash or underscore (`PAN-4539...`, `SSN-536-...`, `cc_4539`)
# is a boundary too; a digit, dot or dash before the number is not (part of a longer number).
_LEAD = Lead(((rb"[^0-9A-Za-z_.\-]",), (rb"[A-Za-z]", rb"[_\-]")))
# Every card-scheme issuer prefix (checked in full by `v.payment_card`) starts with 2-6, or is
# the old 15-digit JCB 1800: a run of other digits ("1 1 1 ...") gives no candidate. Groups are
# separated by one dash or one or two spaces. The exact prefixes as a pattern scan slower.
_CARD = Led(_LEAD, rb"(?:18|[2-6])(?:(?:-| {1,2})?[0-9]){11,18}(?:[^0-9A-Za-z_.\-]|[.\-][^0-9])")
_SSN = Led(
    Lead(((rb"[^0-9A-Za-z\-]",), (rb"[A-Za-z]", rb"-"))),
    rb"(?:[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3} [0-9]{2} [0-9]{4})[^0-9A-Za-z\-]",
)
_NINO = led(rb"[^0-9A-Za-z]", rb"[A-Za-z]{2} ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-Da-d][^0-9A-Za-z]")
# From the `@` on: a literal anchors the scan; the local part is found by walking back.
_EMAIL = rb"@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}[^A-Za-z0-9]"
# Phone candidates; `phones.PhoneValidator` (libphonenumber) decides. Each may end in an
# extension (`x1234`, `ext. 12`, `#12`); every end is reported and the longest valid one counts.
_PHONE_EXT = rb"(?:[ ]?(?:[xX#]|[eE][xX][tT]\.?|extension)[ ]?[0-9]{1,6})?"
_PHONE_INTL = led(
    rb"[^0-9A-Za-z+/.\-]",
    rb"(?:\+|00|011[ .\-]?)[1-9][0-9]{0,2}(?:[ .\-]?\(?[0-9]{1,8}\)?){1,6}"
    + _PHONE_EXT
    + rb"[^0-9A-Za-z]",
)
_PHONE_NANP = led(
    rb"[^0-9A-Za-z+\-./]",
    rb"(?:1[ .\-])?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .\-])[2-9][0-9]{2}[ .\-][0-9]{4}"
    + _PHONE_EXT
    + rb"[^0-9A-Za-z]",
)
_PHONE_LEAD = rb"[^0-9A-Za-z+\-./:]"
_PHONE_TRUNK = led(
    _PHONE_LEAD,
    rb"\(?0[1-9][0-9]{0,3}\)?(?:[ \-][0-9]{2,8}){1,4}"
    + _PHONE_EXT
    + rb"(?:[^0-9A-Za-z\-:./]|[.][^0-9])",
)
# Brazil's `(11) 98765-4321`, `86 6232-8601`: area code without a trunk zero.
_PHONE_BR = led(_PHONE_LEAD, rb"\(?[1-9][0-9]\)? 9?[2-9][0-9]{3}-[0-9]{4}[^0-9A-Za-z\-]")
# Shapes ids share: 7-digit local numbers, unseparated national numbers (only after a phone
# word: `PhoneValidator(cue=True)`).
_PHONE_LOCAL = led(_PHONE_LEAD, rb"[2-9][0-9]{2}[\-.][0-9]{4}" + _PHONE_EXT + rb"[^0-9A-Za-z\-]")
_PHONE_PLAIN = led(_PHONE_LEAD, rb"[0-9]{7,12}" + _PHONE_EXT + rb"[^0-9A-Za-z\-]")
# Ten digits in NANP groups whatever the area code; eight-digit locals (`5527 9357`).
_PHONE_GROUPED = led(
    _PHONE_LEAD,
    rb"(?:1 ?)?\(?[0-9]{3}\)?[ .\-]?[0-9]{3}[ .\-][0-9]{4}" + _PHONE_EXT + rb"[^0-9A-Za-z\-]",
)
_PHONE_EIGHT = led(_PHONE_LEAD, rb"[0-9]{4}[ .\-][0-9]{4}" + _PHONE_EXT + rb"[^0-9A-Za-z\-.]")
_IPV4 = led(
    rb"[^0-9A-Za-z.]",
    rb"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?:[^0-9A-Za-z.]|\.[^0-9A-Za-z])",
)
# From the first `:` on: a literal anchors the scan (the leading group is found by walking
# back, and `v.ipv6_kind` checks the whole address shape, leading boundary included).
_IPV6 = (
    rb":(?:[0-9A-Fa-f]{0,4}:){1,6}(?:[0-9A-Fa-f]{1,4}|[0-9]{1,3}(?:\.[0-9]{1,3}){3})?"
    rb"(?:[^0-9A-Za-z:.]|\.[^0-9A-Za-z])"
)

# --- secrets with a recognisable shape ---------------------------------------------------
# Boundaries: a token is not the middle of a longer token of its own alphabet.
_T = rb"[^0-9A-Za-z_\-]"
_AWS = rb"[^0-9A-Za-z](?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}[^0-9A-Za-z]"
# A 40-character secret access key: after its name, or (validator) near an access key id.
_AWS_SECRET_NAMED = (
    rb"aws[_\-. ]?secret[_\-. ]?(?:access[_\-. ]?)?key[\"']?[ \t]{0,5}(?::=|=>|[:=])[ \t]{0,5}"
    rb"[\"']?[A-Za-z0-9/+]{40}[^A-Za-z0-9/+=]"
)
_PEM = rb"-----BEGIN[A-Z0-9 ]{0,40} PRIVATE KEY(?: BLOCK)?-----"
_SSH2 = rb"---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----"
_PUTTY = rb"PuTTY-User-Key-File-[0-9]: "
_JWT = (
    rb"[^0-9A-Za-z_\-]eyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*"
    rb"(?:[^0-9A-Za-z_\-.]|\.[^0-9A-Za-z_\-])"
)
_GITHUB = _T + rb"gh[pousr]_[A-Za-z0-9]{36}" + _T
_GITHUB_PAT = _T + rb"github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}" + _T
_SLACK = (
    rb"[^0-9A-Za-z](?:xox[abposre]-[0-9A-Za-z\-]{10,}|xapp-[0-9]-[0-9A-Za-z\-]{10,})"
    rb"[^0-9A-Za-z\-]"
)
_SLACK_WEBHOOK = (
    rb"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9_/]{20,200}[^A-Za-z0-9_/]"
)
_OPENAI = _T + rb"sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_\-]{20,250}" + _T
_ANTHROPIC = _T + rb"sk-ant-(?:api|admin|oat|sid)[0-9]{2}-[A-Za-z0-9_\-]{32,200}" + _T
_STRIPE = rb"[^0-9A-Za-z_](?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,247}[^0-9A-Za-z_]"
_STRIPE_WEBHOOK = rb"[^0-9A-Za-z_]whsec_[0-9A-Za-z+/=]{32,100}[^0-9A-Za-z_+/=]"
_GOOGLE_API = _T + rb"AIza[0-9A-Za-z_\-]{35}" + _T
_GOOGLE_OAUTH = _T + rb"GOCSPX-[0-9A-Za-z_\-]{28}" + _T
_GCP_SA = rb"\"private_key_id\"[ \t]{0,3}:[ \t]{0,3}\"[0-9a-f]{40}\""
_AZURE_KEY = (
    rb"(?:AccountKey|SharedAccessKey|AccessKey)[ \t]{0,3}=[ \t]{0,3}[A-Za-z0-9+/]{40,100}={0,2}"
    rb"[^A-Za-z0-9+/=]"
)
_AZURE_SAS = rb"[?&;\s\"']sig=[A-Za-z0-9%+/]{30,120}={0,2}[^A-Za-z0-9%+/=]"
_GITLAB = (
    _T + rb"(?:glpat|gldt|glrt|glptt|glcbt|glsoat|glft|glimt|glagent|gloas)-"
    rb"[0-9A-Za-z_\-.]{20,}" + _T
)
_NPM = _T + rb"npm_[A-Za-z0-9]{36}" + _T
_PYPI = _T + rb"pypi-AgE(?:IcHlwaS5vcmc|NdGVzdC5weXBpLm9yZw)[A-Za-z0-9_\-]{50,}" + _T
_TWILIO = rb"[^0-9A-Za-z_]SK[0-9a-fA-F]{32}[^0-9A-Za-z_]"
_SENDGRID = _T + rb"SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}" + _T
_HUGGINGFACE = rb"[^0-9A-Za-z_](?:hf_|api_org_)[A-Za-z]{34}[^0-9A-Za-z_]"
_AUTH_HEADER = (
    rb"authorization[\"']?[ \t]{0,5}[:=][ \t]{0,5}[\"']?"
    rb"(?:bearer|basic|token|bot|digest|apikey|sso-key)[ \t]+[A-Za-z0-9\-._~+/=:]{8,}"
    rb"[^A-Za-z0-9\-._~+/=:]"
)
# `machine host login user password secret` (also `default login ...`).
_NETRC = (
    rb"(?:machine[ \t]+[^\s]+|default)[ \t\r\n]+login[ \t]+[^\s]+[ \t\r\n]+"
    rb"password[ \t]+[^\s]+\s"
)
# `host:port:database:user:password`, alone on its line; from the port's `:` on (the host is
# checked by the validator: a long variable prefix is slow to scan).
_PGPASS = rb"[A-Za-z0-9.\-*\]]:(?:[0-9]{1,5}|\*):[^:\s]+:[^:\s]+:[^\s]+\r?\n"

# --- secrets stated by syntax -------------------------------------------------------------
# Repeats here are unbounded: the validators bound their own windows, and large bounded
# repeats made the Hyperscan compile several times slower (~2 s for the database).
_SECRET_ASSIGNMENT = (
    rb"(?:" + v.SECRET_KEYS + rb")[\"']?[ \t]*(?::=|=>|[:=])[ \t]*"
    rb"(?:[bBrRuU]?[\"'`][^\"'`\n]{4,}[\"'`]|[^\s\"'`,;<>=][^\s\"'`,;<>]{3,}[\s\"'`,;<>])"
)
# Prose: "the prod root password is Xk9#mQ2!vL7p", "pw for the VPN was hunter22".
_PASSWORD_PROSE = (
    rb"(?:password|passwd|passphrase|passcode|pwd|pw)(?:[ \t]+[^\s]+){0,4}[ \t]+"
    rb"(?:is|was|are|will be)[ \t]*:?[ \t]+(?:now[ \t]+|still[ \t]+|just[ \t]+)?"
    rb"[^\s]{4,}\s"
)
# Command lines: mysql -pSECRET, sshpass -p SECRET, --password SECRET, redis-cli -a SECRET,
# ldapsearch -w SECRET, docker login -p SECRET, curl -u user:SECRET.
_PASSWORD_CLI = (
    rb"(?:(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlshow|mysqlcheck|mariadb|mariadb-dump)"
    rb"[^\n|;&]*[ \t]-p[^\s\-][^\s]{2,}\s"
    rb"|sshpass[ \t]+-p[ \t]*[^\s\-][^\s]{2,}\s"
    rb"|--(?:password|passwd|pass|db-password|admin-password|root-password)(?:=|[ \t]+)"
    rb"[^\s\-][^\s]{2,}\s"
    rb"|redis-cli[^\n|;&]*[ \t]-a[ \t]+[^\s\-][^\s]{2,}\s"
    rb"|ldap[a-z]{2,10}[^\n|;&]*[ \t]-w[ \t]+[^\s\-][^\s]{2,}\s"
    rb"|docker[ \t]+login[^\n|;&]*[ \t]-p[ \t]+[^\s\-][^\s]{2,}\s"
    rb"|(?:curl|wget|http)[^\n|;&]*(?:[ \t]-u|--user)[ \t]*[\"']?[^\s:\"']+:"
    rb"[^\s\"']{3,}[\s\"'])"
)
# From the `://` on: the scheme before it is checked by `v.url_credentials`.
_URL_CREDENTIALS = rb"://[^\s:/@\"'<>]{0,200}:[^\s/@\"'<>]{1,200}@[A-Za-z0-9.\-\[]"

# Padded base64 runs (standard or URL-safe alphabet) of 20+ characters, reported once at their
# end; decoded and scanned again when they hold printable text (`v.base64_text`). The padding
# anchors the pattern on a literal: without it the class-only pattern cost ~2.5 us per 2 KB
# scanned (a third of the whole scan), and two of three encoded lengths are padded.
_BASE64 = rb"[A-Za-z0-9+/_\-]{18}[A-Za-z0-9+/_\-=]=[^A-Za-z0-9+/=_\-]"

# Long tokens are scanned without start-of-match tracking (costly on long repeats): the start
# is found by walking back over the token's alphabet, prefix included.
_token_run = v.walk_back(v.TOKEN_CHARS | frozenset(b"."), 1024)


def _TOKEN_START(data: bytes, end: int) -> int:
    return _token_run(data, end - 1)


_v6_run = v.walk_back(frozenset(b"0123456789ABCDEFabcdef:."), 48)


def _V6_START(data: bytes, end: int) -> int:
    return _v6_run(data, end - 1)  # the last byte is the end boundary


R = Level.RESTRICTED
_TOKEN = v.TOKEN_CHARS

BUILTINS: tuple[Builtin, ...] = (
    Builtin(
        "pii.email",
        Level.CONFIDENTIAL,
        (_EMAIL,),
        None,
        som=False,
        locate=v.email_start,
        kind=v.email_kind,
        database=1,
    ),
    Builtin("pii.email_attribution", Level.INTERNAL, (), None),
    Builtin(
        "pii.phone",
        Level.CONFIDENTIAL,
        (_PHONE_INTL, _PHONE_NANP, _PHONE_TRUNK, _PHONE_BR),
        None,
        configure=phones.validator,
        inner=v.PHONE_INNER,
    ),
    Builtin(
        "pii.phone",
        Level.CONFIDENTIAL,
        (_PHONE_LOCAL, _PHONE_PLAIN, _PHONE_GROUPED, _PHONE_EIGHT),
        None,
        configure=phones.cued_validator,
        inner=v.PHONE_INNER,
    ),
    Builtin("gov.us_ssn", R, (_SSN,), v.us_ssn, inner=v.DIGITS),
    Builtin("gov.uk_nino", R, (_NINO,), v.uk_nino),
    Builtin("fin.payment_card", R, (_CARD,), v.payment_card, inner=v.DIGITS),
    Builtin("fin.iban", Level.CONFIDENTIAL, (_IBAN,), v.iban),
    # One pattern per address family; `kind` says public (net.ipv4 / net.ipv6) or private.
    Builtin("net.ipv4", Level.INTERNAL, (_IPV4,), None, kind=v.ipv4_kind, inner=v.DIGITS),
    Builtin(
        "net.ipv6",
        Level.INTERNAL,
        (_IPV6,),
        None,
        som=False,
        locate=_V6_START,
        kind=v.ipv6_kind,
        database=1,
        inner=v.IPV6_INNER,
    ),
    Builtin("net.private_ip", Level.INTERNAL, (), None),
    Builtin("secret.aws_access_key", R, (_AWS,), v.aws_access_key),
    Builtin(
        "secret.aws_secret_key",
        R,
        (_AWS_SECRET_NAMED,),
        v.aws_secret_named,
        caseless=True,
        som=False,
    ),
    Builtin("secret.aws_secret_key", R, (_AWS,), v.aws_secret_near_id),
    Builtin("secret.private_key", R, (_PEM, _SSH2), v.pem_private_key),
    Builtin("secret.private_key", R, (_PUTTY,), v.putty_private_key),
    Builtin("secret.jwt", R, (_JWT,), v.jwt, inner=v.JWT_CHARS),
    Builtin("secret.github_token", R, (_GITHUB,), v.crc32_token, inner=_TOKEN),
    Builtin("secret.github_token", R, (_GITHUB_PAT,), v.random_token(3.0), inner=_TOKEN),
    Builtin("secret.slack_token", R, (_SLACK,), v.random_token(3.0), inner=_TOKEN),
    Builtin("secret.slack_token", R, (_SLACK_WEBHOOK,), None, inner=_TOKEN | {47}),
    Builtin(
        "secret.openai_key",
        R,
        (_OPENAI,),
        v.openai_key,
        inner=_TOKEN,
        som=False,
        locate=_TOKEN_START,
    ),
    Builtin(
        "secret.anthropic_key",
        R,
        (_ANTHROPIC,),
        v.random_token(3.0),
        inner=_TOKEN,
        som=False,
        locate=_TOKEN_START,
    ),
    Builtin("secret.stripe_key", R, (_STRIPE, _STRIPE_WEBHOOK), v.stripe_key, inner=v.B64_CHARS),
    Builtin(
        "secret.google_api_key", R, (_GOOGLE_API, _GOOGLE_OAUTH), v.random_token(3.0), inner=_TOKEN
    ),
    Builtin("secret.gcp_service_account", R, (_GCP_SA,), None, inner=v.HEX),
    Builtin("secret.azure_storage_key", R, (_AZURE_KEY,), v.azure_key, caseless=True, som=False),
    Builtin("secret.azure_sas_token", R, (_AZURE_SAS,), v.azure_sas, inner=v.SAS_CHARS),
    Builtin(
        "secret.gitlab_token",
        R,
        (_GITLAB,),
        v.random_token(3.0),
        inner=_TOKEN,
        som=False,
        locate=_TOKEN_START,
    ),
    Builtin("secret.npm_token", R, (_NPM,), v.crc32_token, inner=_TOKEN),
    Builtin("secret.pypi_token", R, (_PYPI,), None, inner=_TOKEN, som=False, locate=_TOKEN_START),
    Builtin("secret.twilio_key", R, (_TWILIO,), v.twilio_key),
    Builtin("secret.sendgrid_key", R, (_SENDGRID,), None, inner=_TOKEN | {46}),
    Builtin(
        "secret.huggingface_token",
        R,
        (_HUGGINGFACE,),
        v.random_token(3.0, digit=False),
        inner=_TOKEN,
    ),
    Builtin(
        "secret.authorization_header",
        R,
        (_AUTH_HEADER,),
        v.authorization_header,
        caseless=True,
        som=False,
    ),
    Builtin("secret.netrc", R, (_NETRC,), v.netrc, som=False),
    Builtin("secret.pgpass", R, (_PGPASS,), v.pgpass, som=False, database=1),
    Builtin(
        "secret.assignment",
        R,
        (_SECRET_ASSIGNMENT,),
        v.secret_assignment,
        caseless=True,
        som=False,
    ),
    Builtin("secret.password", R, (_PASSWORD_PROSE,), v.password_prose, caseless=True, som=False),
    Builtin("secret.password", R, (_PASSWORD_CLI,), v.password_cli, som=False),
    Builtin(
        "secret.url_credentials",
        R,
        (_URL_CREDENTIALS,),
        v.url_credentials,
        som=False,
    ),
)

# Not a detector: base64 runs, decoded and scanned again by `Classifier.scan`.
ENCODED_BASE64 = "encoded.base64"
ENCODED = Builtin(ENCODED_BASE64, Level.PUBLIC, (_BASE64,), None, som=False, locate=v.base64_start)
# National identifiers checked by python-stdnum (DE, FR, ES, IT, NL, IN, CA, BR).
BUILTINS += tuple(
    Builtin(detector, Level.RESTRICTED, (pattern,), check)
    for detector, pattern, check in national_ids.DETECTORS
)

BUILTIN_IDS: frozenset[str] = frozenset(b.id for b in BUILTINS)

# The detectors a `kind` pattern of the key detector may answer with.
KINDS: dict[str, frozenset[str]] = {
    "pii.email": frozenset({"pii.email", "pii.email_attribution"}),
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
