"""National identifiers beyond the US SSN and UK NINO, checked by `python-stdnum` (format and
check digits, as the issuing authority defines them).

Hyperscan finds the shapes; stdnum decides. Where the shape is distinctive (a check letter, the
codice fiscale's layout, the CPF's dots and dash, the NIR's 15 digits with sex and birth month)
the checksum alone decides. Where it is a bare run of digits that a one-in-ten checksum would
accept as often as not in code and tables (BSN, SIN, tax ids, unformatted Aadhaar and CPF), the
number counts only after a word that names it (`BSN`, `SIN`, `Steuer-ID`, `Aadhaar`, `CPF` ...)
within the 60 characters before it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType

from stdnum.br import cpf
from stdnum.ca import sin
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.in_ import aadhaar
from stdnum.it import codicefiscale
from stdnum.nl import bsn

from gateway.inspect.leads import Lead, Led, led

Validator = Callable[[bytes, int, int], bool]

_L = rb"[^0-9A-Za-z\-.]"  # leading boundary: not inside a longer token or number
_T = rb"(?:[^0-9A-Za-z\-]|[.\-][^0-9A-Za-z])"  # trailing boundary (a sentence's full stop ok)
_CORE = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _core(data: bytes, start: int, end: int) -> str:
    while start < end and data[start] not in _CORE:
        start += 1
    while end > start and data[end - 1] not in _CORE:
        end -= 1
    return data[start:end].decode("ascii", "replace")


def _cue(words: bytes) -> re.Pattern[bytes]:
    return re.compile(rb"(?i)(?:" + words + rb")")


def _check(module: ModuleType, cue: re.Pattern[bytes] | None = None) -> Validator:
    def check(data: bytes, start: int, end: int) -> bool:
        # Digit groups that continue on either side (`2221 5637 2355 1004`) are a longer
        # number (a card), not an id.
        if (data[start : start + 1] == b" " and data[start - 1 : start].isdigit()) or (
            data[end - 1 : end] == b" " and data[end : end + 1].isdigit()
        ):
            return False
        if cue is not None and cue.search(data, max(0, start - 60), start) is None:
            return False
        return bool(module.is_valid(_core(data, start, end)))

    return check


_DE_CUE = _cue(rb"steuer|idnr|identifikationsnummer|tax\s*id|\btin\b")
_NL_CUE = _cue(rb"\bbsn\b|burgerservice|sofi")
_CA_CUE = _cue(rb"\bsin\b|social\s+insurance|\bnas\b|assurance\s+sociale")
_IN_CUE = _cue(rb"aadhaar|aadhar|\buid\b|\xe0\xa4\x86\xe0\xa4\xa7\xe0\xa4\xbe\xe0\xa4\xb0")
_BR_CUE = _cue(rb"\bcpf\b|cadastro")

# The codice fiscale's seven digit positions may each be replaced by a letter (omocodia), from
# the right: every code issued with up to six replacements keeps its first digit, the 7th
# character, and is scanned from that digit on (a pattern led by six letters would keep the
# whole scan from skipping over prose). The 7th character as a letter is scanned in upper case
# only: all seven replaced, or a hand-made code (docs/inspection.md).
_CF_X = rb"[0-9LMNPQRSTUVlmnpqrstuv]"
_CF_FROM_DIGIT = Led(
    Lead(((_L,) + (rb"[A-Za-z]",) * 6,)),
    rb"[0-9]"
    + _CF_X
    + rb"[A-Ea-eHhLlMmPpRrSsTt]"
    + _CF_X
    + rb"{2}[A-Za-z]"
    + _CF_X
    + rb"{3}[A-Za-z]"
    + _T,
)
_CF_UPPER = led(
    _L,
    rb"[A-Z]{6}[LMNPQRSTUV][0-9LMNPQRSTUV][A-EHLMPRST][0-9LMNPQRSTUV]{2}[A-Z]"
    rb"[0-9LMNPQRSTUV]{3}[A-Z]" + _T,
)

# (detector id, Hyperscan pattern, validator); registered in `detectors.BUILTINS`, RESTRICTED.
# Each pattern is led by the boundary `_L`, checked in Python (`gateway.inspect.leads`).
DETECTORS: tuple[tuple[str, Led, Validator], ...] = (
    # Steuerliche Identifikationsnummer: 11 digits, `12 345 678 901` or compact.
    ("gov.de_tax_id", led(_L, rb"[1-9][0-9](?: ?[0-9]{3}){3}" + _T), _check(idnr, _DE_CUE)),
    # NIR (numéro de sécurité sociale): sex, year, month, département (2A/2B), commune, order,
    # key; spaced or compact.
    (
        "gov.fr_nir",
        led(
            _L,
            rb"[1-478] ?[0-9]{2} ?[0-9]{2} ?(?:[0-9]{2}|2[ABab]) ?[0-9]{3} ?[0-9]{3} ?[0-9]{2}"
            + _T,
        ),
        _check(nir),
    ),
    ("gov.es_dni", led(_L, rb"[0-9]{8}[ \-]?[A-Za-z]" + _T), _check(dni)),
    ("gov.es_nie", led(_L, rb"[XYZxyz][ \-]?[0-9]{7}[ \-]?[A-Za-z]" + _T), _check(nie)),
    ("gov.it_codice_fiscale", _CF_FROM_DIGIT, _check(codicefiscale)),
    ("gov.it_codice_fiscale", _CF_UPPER, _check(codicefiscale)),
    # Burgerservicenummer: 9 digits (11-proof), `1234.56.782` or compact.
    ("gov.nl_bsn", led(_L, rb"[0-9]{4}\.?[0-9]{2}\.?[0-9]{3}" + _T), _check(bsn, _NL_CUE)),
    # Aadhaar: 12 digits, Verhoeff; grouped 4-4-4 counts alone, compact after a cue.
    (
        "gov.in_aadhaar",
        led(_L, rb"[2-9][0-9]{3}[ \-][0-9]{4}[ \-][0-9]{4}" + _T),
        _check(aadhaar),
    ),
    ("gov.in_aadhaar", led(_L, rb"[2-9][0-9]{11}" + _T), _check(aadhaar, _IN_CUE)),
    # Social Insurance Number: 9 digits, Luhn.
    (
        "gov.ca_sin",
        led(_L, rb"[0-9]{3}[ \-]?[0-9]{3}[ \-]?[0-9]{3}" + _T),
        _check(sin, _CA_CUE),
    ),
    # CPF: `123.456.789-09` counts alone, compact after a cue.
    ("gov.br_cpf", led(_L, rb"[0-9]{3}\.[0-9]{3}\.[0-9]{3}-[0-9]{2}" + _T), _check(cpf)),
    ("gov.br_cpf", led(_L, rb"[0-9]{11}" + _T), _check(cpf, _BR_CUE)),
)

IDS: frozenset[str] = frozenset(d[0] for d in DETECTORS)
