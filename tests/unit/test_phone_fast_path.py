"""The fast phone path (`phone_metadata`, libphonenumber's metadata precompiled) decides every
candidate exactly as `phonenumbers.parse` + `is_valid_number` does (the reference,
`tests/phone_reference.py`): Faker numbers in many locales, every region's example numbers in
every format (and one digit off), random digit strings with separators, `+`, `00`, parentheses and
extensions, ZIP+4 codes, dates, and the candidates the real scanner reports on the labelled
corpus and the personal-data set."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import phonenumbers
import pytest
from faker import Faker
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from gateway.config import InspectionConfig
from gateway.inspect import normalize, phone_metadata
from gateway.inspect.classification import Classifier
from gateway.inspect.phone_metadata import Verdict
from gateway.inspect.phones import (
    _CUE,
    _CUE_SCAN,
    _NOT_PHONE_BEFORE,
    DEFAULT_REGIONS,
    PhoneValidator,
    _csv_phone_column,
    _in_phone_column,
    _not_phone_before,
)
from tests.phone_reference import ReferencePhoneValidator

DATA = Path(__file__).resolve().parent.parent / "data"
SEED = 20261202
LOCALES = (
    "en_US", "en_GB", "en_CA", "en_AU", "en_IE", "en_IN", "en_NZ", "en_PK", "en_NG", "en_KE",
    "de_DE", "de_AT", "de_CH", "fr_FR", "fr_CH", "fr_BE", "fr_CA", "es_ES", "es_MX", "es_AR",
    "es_CO", "es_CL", "it_IT", "nl_NL", "nl_BE", "pt_BR", "pt_PT", "sv_SE", "no_NO", "da_DK",
    "fi_FI", "pl_PL", "cs_CZ", "sk_SK", "hu_HU", "ro_RO", "bg_BG", "el_GR", "tr_TR", "ru_RU",
    "uk_UA", "he_IL", "ar_EG", "ar_SA", "fa_IR", "hi_IN", "ja_JP", "ko_KR", "zh_CN", "zh_TW",
    "th_TH", "vi_VN", "id_ID", "hr_HR", "sl_SI", "lt_LT", "lv_LV", "et_EE", "ka_GE", "hy_AM",
    "az_AZ", "bn_BD", "ne_NP", "si_LK", "zu_ZA", "mt_MT", "is_IS", "lb_LU",
)  # fmt: skip
FORMATS = (
    PhoneNumberFormat.E164,
    PhoneNumberFormat.INTERNATIONAL,
    PhoneNumberFormat.NATIONAL,
    PhoneNumberFormat.RFC3966,
)
REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
# Region sets a deployment might configure; plus seeded random ones below.
REGION_SETS: tuple[tuple[str, ...], ...] = (
    DEFAULT_REGIONS,
    ("DE",),
    ("US",),
    ("GB", "FR"),
    ("IN", "BR", "MX"),
    ("CA", "US"),
    ("IT", "SM", "VA"),
    ("RU", "KZ"),
    ("AU", "NZ", "JP", "CN", "AR"),
)
BEFORE = (
    "", " ", "call ", "Tel: ", "order ", "ISSN ", "July ", "(", "id=", "1 ", "x ", "version ",
    "v", "pp. ", "Jan., ", "page: ", "doi:", "Decimal ", "via ", "mayday\n", "\t", "ver. ",
)  # fmt: skip
AFTER = ("", " ", ".", ",", ")", " ext", ".5", "\n")


def _mutations(text: str, rng: random.Random) -> Iterator[str]:
    """The text, and the text one digit off: changed, dropped, doubled."""
    yield text
    positions = [i for i, c in enumerate(text) if c.isdigit()]
    if not positions:
        return
    i = rng.choice(positions)
    yield text[:i] + str((int(text[i]) + rng.randint(1, 9)) % 10) + text[i + 1 :]
    yield text[:i] + text[i + 1 :]
    yield text[:i] + text[i] + text[i:]


def _example_numbers(rng: random.Random) -> Iterator[str]:
    types = [t for t in PhoneNumberType.values() if t != PhoneNumberType.UNKNOWN]
    numbers = []
    for region in REGIONS:
        numbers.append(phonenumbers.example_number(region))
        numbers.append(phonenumbers.invalid_example_number(region))
        numbers.extend(phonenumbers.example_number_for_type(region, t) for t in types)
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        numbers.append(phonenumbers.example_number_for_non_geo_entity(code))
    for number in numbers:
        if number is None:
            continue
        for fmt in FORMATS:
            written = phonenumbers.format_number(number, fmt)
            for text in _mutations(written, rng):
                yield text
                if text.startswith("+"):
                    yield "00" + text[1:]
                    yield "011 " + text[1:]
                    yield "(" + text + ")"


def _faker_numbers(rng: random.Random) -> Iterator[str]:
    for locale in LOCALES:
        fake = Faker(locale)
        fake.seed_instance(SEED)
        for _ in range(60):
            yield from _mutations(fake.phone_number(), rng)


def _random_numbers(rng: random.Random, count: int) -> Iterator[str]:
    separators = (" ", "-", ".", "", "", " ", "/", ") ", " (", "  ")
    fronts = ("", "", "", "+", "00", "011 ", "(", "+(", "(+", "0", "1-", "++", "+0", ")")
    extensions = ("", "", "", "", " x12", " ext. 345", "#7", " extension 9", "x1234567", " #")
    for _ in range(count):
        groups = [
            "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 5)))
            for _ in range(rng.randint(1, 5))
        ]
        text = groups[0]
        for group in groups[1:]:
            text += rng.choice(separators) + group
        yield rng.choice(fronts) + text + rng.choice(extensions)
    for _ in range(count // 4):  # NANP shapes, assigned area codes or not
        yield (
            f"({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"
            if rng.random() < 0.5
            else f"{rng.choice(('', '1-', '+1 ', '1 '))}{rng.randint(100, 999)}"
            f"{rng.choice('.- ')}{rng.randint(100, 999)}-{rng.randint(0, 9999):04d}"
        )
    for _ in range(count // 4):  # national trunk shapes
        yield f"0{rng.randint(1, 9999)} {rng.randint(0, 99999999)}"
        yield "".join(rng.choice("0123456789") for _ in range(rng.randint(7, 15)))


def _other_numbers(rng: random.Random) -> Iterator[str]:
    for _ in range(300):
        yield f"{rng.randint(0, 99999):05d}-{rng.randint(0, 9999):04d}"  # ZIP+4
        day, month, year = rng.randint(1, 31), rng.randint(1, 12), rng.randint(1900, 2099)
        yield f"{day:02d}-{month:02d}-{year}"
        yield f"{year}.{month:02d}.{day:02d}"
        yield f"{month}/{day}/{year % 100:02d}"
        yield f"{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.1"
        yield f"{rng.randint(1, 9)}.{rng.randint(0, 99)}.{rng.randint(0, 999)}"
    yield from (
        "555-0123", "(415) 555-0142", "0377-0427", "1234567890", "123456789", "02110-1301",
        "+44 20 7946 0018", "+1 415 867 5309", "(415) 867-5309", "030 12345678", "867-5309",
        "+44(0)131 4960979", "+49 30 12345678", "+33 1 23 45 67 89", "+91 98250 12345",
        "(02328) 60129", "05 45 23 28 60", "3680496644", "001-335-504-9258", "+55 14 7483-3788",
        "+447700900123", "0118 496 0982", "883-237-8876x232", "212.736.5000 ext. 12",
        "+1-912-490-4047x96669", "+800 1234 5678", "+882 1234 5678", "+979 123456789",
        "+0 123 456 789", "+999 123 4567", "+1", "+12", "00", "0044", "000 000 0000",
    )  # fmt: skip


def _candidates() -> list[str]:
    rng = random.Random(SEED)
    seen: dict[str, None] = {}
    for source in (
        _example_numbers(rng),
        _faker_numbers(rng),
        _random_numbers(rng, 6000),
        _other_numbers(rng),
    ):
        for text in source:
            seen.setdefault(text, None)
    return list(seen)


@pytest.fixture(scope="module")
def candidates() -> list[str]:
    return _candidates()


def _validators(regions: tuple[str, ...], cue: bool) -> tuple[PhoneValidator, PhoneValidator]:
    return PhoneValidator(regions, cue=cue), ReferencePhoneValidator(regions, cue=cue)


def test_the_candidates_cover_the_shapes(candidates: list[str]) -> None:
    """Enough candidates, and most of them in the shapes the fast path decides itself."""
    fast = PhoneValidator(DEFAULT_REGIONS)
    decided = sum(fast._fast_verdict(text.encode()) is not None for text in candidates)
    assert len(candidates) > 20000
    assert decided > len(candidates) // 2


def test_the_library_verdict_is_replayed_exactly(candidates: list[str]) -> None:
    """Per candidate text and region set: the replayed verdict (valid / possible / neither)
    equals the library's, wherever the fast path gives one."""
    rng = random.Random(SEED + 1)
    sets = list(REGION_SETS) + [tuple(rng.sample(REGIONS, 3)) for _ in range(12)]
    validators = [PhoneValidator(regions) for regions in sets]
    disagreements = []
    compared = 0
    for index, text in enumerate(candidates):
        check = validators[0] if index % 3 == 0 else validators[index % len(validators)]
        fast = check._fast_verdict(text.encode())
        if fast is None:
            continue
        compared += 1
        slow = check._library_verdict(text)
        if fast is not slow:
            disagreements.append((text, check.regions, fast, slow))
    assert compared > 15000
    assert disagreements == []


def test_every_region_parses_its_own_numbers_exactly() -> None:
    """Each region libphonenumber knows, configured alone: its national and international
    numbers, one digit off, with digits after the national prefix, and random digit strings
    beginning with its prefixes."""
    rng = random.Random(SEED + 2)
    disagreements = []
    for region in REGIONS:
        check = PhoneValidator((region,))
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
        assert meta is not None
        texts: list[str] = []
        for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is None:
                continue
            national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
            e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
            texts += _mutations(national, rng)
            texts += _mutations(e164[1:], rng)  # the calling code without `+`
            # Carrier codes and other digits between the national prefix and the number
            # (national prefix transform rules: Argentina, Brazil, Mexico ...).
            nsn = phonenumbers.national_significant_number(number)
            for _ in range(6):
                texts.append(f"{meta.national_prefix or ''}{rng.randint(0, 99)} {nsn}")
        prefixes = [
            str(meta.country_code),
            meta.national_prefix or "",
            meta.preferred_international_prefix or "",
            "0",
            "00",
            "011",
            "",
        ]
        for _ in range(60):
            length = rng.randint(4, 14)
            digits = "".join(rng.choice("0123456789") for _ in range(length))
            texts.append(rng.choice(prefixes) + digits)
        for text in texts:
            fast = check._fast_verdict(text.encode())
            if fast is not None and fast is not check._library_verdict(text):
                disagreements.append((region, text, fast))
    assert disagreements == []


def test_the_validator_decides_as_before_in_context(candidates: list[str]) -> None:
    """The whole validator (cheap rejections, cue words, extensions, fall-back) on each
    candidate written into text, fast against the library-only reference."""
    rng = random.Random(SEED + 3)
    pairs = [_validators(regions, cue) for regions in REGION_SETS[:4] for cue in (False, True)]
    disagreements = []
    for text in candidates:
        fast, slow = rng.choice(pairs)
        data = normalize.to_bytes(rng.choice(BEFORE) + text + rng.choice(AFTER))
        start = data.find(text.encode()[:1])
        start = max(0, start - 1)
        for end in (len(data), len(data) - 1):
            if fast(data, start, end) != slow(data, start, end):
                disagreements.append((data, start, end, fast.regions, fast.cue))
    assert disagreements == []


def test_the_words_before_are_checked_as_before() -> None:
    """The cheap pre-check for ISSN / version / month words before a candidate answers as the
    pattern it guards, over random words, spacing and punctuation before a number."""
    rng = random.Random(SEED + 5)
    words = (
        "jan", "January", "feb.", "MAR", "apr", "may", "Mayday", "jun", "jul", "aug", "sept",
        "oct", "nov", "Dec", "issn", "ISBN", "doi", "page", "pages", "pp.", "version", "ver.",
        "v", "V", "vol", "via", "call", "phone", "on", "x", "1", "a", "pjan", "_v", "3v", "",
    )  # fmt: skip
    glue = ("", " ", "  ", ":", ": ", ".", ". ", ",", ", ", ".,", "\n", "\t", ":.", " :", "-")
    disagreements = []
    for _ in range(20000):
        text = "".join(
            rng.choice(words) + rng.choice(glue) for _ in range(rng.randint(1, 4))
        ).encode()
        data = text + b"0118 496 0982"
        start = len(text)
        expected = _NOT_PHONE_BEFORE.search(data, max(0, start - 12), start) is not None
        if _not_phone_before(data, start) != expected:
            disagreements.append(data)
    assert disagreements == []


def test_phone_words_and_columns_are_found_as_before() -> None:
    """The faster phone-word pattern and phone-column check answer as those they stand in
    for: phone words in any case, glued to letters or digits, accented, `☎`; CSV, TSV and
    piped tables with and without a phone header."""
    assert _CUE.pattern.startswith(rb"(?i)\b")
    rng = random.Random(SEED + 6)
    cues = (
        "phone", "Tel", "tel.", "TELEPHONE", "call", "cell", "Mobile", "mob", "fax", "contact",
        "reach", "text  me", "WhatsApp", "ext", "ext.", "hotline", "dial", "ph", "ph.", "tél",
        "Telefon", "teléfono", "telefono", "celular", "☎", "x☎",
    )  # fmt: skip
    others = (
        "phoned", "mobility", "telex", "order", "id", "name", "city", "a", "1", "_", "é", "",
        "Xphone", "recall", "dialog", "extra", "t", "p",
    )  # fmt: skip
    glue = ("", " ", ",", ";", "\t", "|", "\n", ": ", "-", "é")
    disagreements = []
    for _ in range(20000):
        text = "".join(
            rng.choice(cues if rng.random() < 0.1 else others) + rng.choice(glue)
            for _ in range(rng.randint(1, 12))
        ).encode()
        data = text + b"0118 496 0982" + rng.choice((b"", b",x", b"\n", b"|a|b"))
        start = len(text)
        window = (max(0, start - 40), start)
        if (_CUE.search(data, *window) is None) != (_CUE_SCAN.search(data, *window) is None):
            disagreements.append(("cue", data))
        if _in_phone_column(data, start + 1) != _csv_phone_column(data, start + 1):
            disagreements.append(("column", data))
    assert disagreements == []


def _scanned_candidates(texts: list[str]) -> list[tuple[bytes, int, int, tuple[str, ...], bool]]:
    """Every (data, start, end) the real scanner hands the phone validators for these texts."""
    seen: list[tuple[bytes, int, int, tuple[str, ...], bool]] = []
    original = PhoneValidator.__call__

    def record(self: PhoneValidator, data: bytes, start: int, end: int) -> bool:
        seen.append((bytes(data), start, end, self.regions, self.cue))
        return original(self, data, start, end)

    patch = pytest.MonkeyPatch()
    patch.setattr(PhoneValidator, "__call__", record)
    try:
        classifier = Classifier(InspectionConfig())
        for text in texts:
            classifier.scan(normalize.to_bytes(text))
    finally:
        patch.undo()
    return seen


def test_the_scanners_candidates_are_decided_as_before(candidates: list[str]) -> None:
    """What Hyperscan really reports on the labelled corpus, the personal-data set and the
    candidates written into sentences."""
    from tests.data.personal_eval import generate

    texts = [json.loads(line)["text"] for line in (DATA / "inspect_corpus.jsonl").open()]
    texts += [sample.text for sample in generate(300)]
    rng = random.Random(SEED + 4)
    texts += [
        f"{rng.choice(BEFORE)}{text}{rng.choice(AFTER)} and {rng.choice(candidates)} again."
        for text in rng.sample(candidates, 4000)
    ]
    scanned = _scanned_candidates(texts)
    assert len(scanned) > 3000
    references = {
        (regions, cue): ReferencePhoneValidator(regions, cue=cue)
        for _, _, _, regions, cue in scanned
    }
    fasts = {key: PhoneValidator(key[0], cue=key[1]) for key in references}
    disagreements = [
        (data, start, end)
        for data, start, end, regions, cue in scanned
        if fasts[regions, cue](data, start, end) != references[regions, cue](data, start, end)
    ]
    assert disagreements == []


def test_threads_share_a_validator(candidates: list[str]) -> None:
    """Four threads on one validator, the metadata compiled while they run: the same verdicts
    as one thread."""
    phone_metadata._COUNTRIES.clear()
    phone_metadata._METAS.clear()
    check = PhoneValidator(("US", "GB", "DE"))
    texts = [text.encode() for text in candidates[::7]]
    expected = [check._fast_verdict(text) for text in texts]
    phone_metadata._COUNTRIES.clear()
    results: list[list[Verdict | None]] = [[] for _ in range(4)]

    def run(slot: int) -> None:
        results[slot] = [check._fast_verdict(text) for text in texts]

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 4


def test_only_metadata_is_cached(candidates: list[str]) -> None:
    """The module's caches hold compiled metadata keyed by region and calling code: nothing
    derived from a candidate's text stays in memory after the call."""
    check = PhoneValidator(DEFAULT_REGIONS)
    for text in candidates[:3000]:
        check._fast_verdict(text.encode())
    codes = set(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    assert set(phone_metadata._COUNTRIES) <= codes
    assert {region for region, _ in phone_metadata._METAS} <= set(REGIONS) | {"001"}
    assert {code for _, code in phone_metadata._METAS} <= codes | {0}
