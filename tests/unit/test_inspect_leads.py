"""Led patterns (Hyperscan scans the core, Python checks the lead: `gateway.inspect.leads`)
report exactly what scanning each whole pattern would: the same pattern, leftmost start and end,
on the labelled corpus, real code and prose from this machine, and adversarial text built to
put a value's start after a letter, inside a longer number, or after a glued label. Both of the
classifier's paths are compared: the led databases (text) and the whole ones (digit-dense
input)."""

from __future__ import annotations

import json
import random
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hyperscan
import pytest

from gateway.config import InspectionConfig
from gateway.inspect import classification, normalize
from gateway.inspect.classification import Classifier, _compile, _digit_dense
from gateway.inspect.leads import Lead, led

DATA = Path(__file__).resolve().parent.parent / "data"
SEED = 20261202
Hits = list[tuple[int, int, int]]


class Reference:
    """Every pattern scanned whole (lead included) in one database."""

    def __init__(self, classifier: Classifier) -> None:
        self.database = _compile(list(classifier._patterns_by_id), whole=True)
        self.scratch = hyperscan.Scratch(self.database)

    def hits(self, data: bytes) -> Hits:
        out: Hits = []

        def collect(pattern: int, start: int, end: int, flags: int, context: Any) -> None:
            out.append((pattern, start, end))

        self.database.scan(data, match_event_handler=collect, scratch=self.scratch)
        return sorted(out)


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(InspectionConfig())


@pytest.fixture(scope="module")
def reference(classifier: Classifier) -> Reference:
    return Reference(classifier)


@pytest.fixture(params=["led", "whole"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs on both paths, whatever the input's size and digits."""
    monkeypatch.setattr(classification, "_DENSE_MIN_BYTES", 0)
    monkeypatch.setattr(classification, "_DENSE_DIGITS", 2.0 if request.param == "led" else -1.0)
    return str(request.param)


def assert_same(classifier: Classifier, reference: Reference, texts: Iterator[str]) -> int:
    compared = 0
    for text in texts:
        data = normalize.to_bytes(text)
        assert sorted(classifier._scan(data)) == reference.hits(data), text[:80]
        compared += 1
    return compared


# Starts that the core finds further left than the whole pattern does.
ADVERSARIAL = (
    "x1 415 867 5309",  # NANP: `1 ` glued to a letter, ` 415` has the boundary
    "x1 (415) 867-5309 x12",
    "call x+44 20 7946 0018 now",
    "a00 44 20 7946 0018",
    "1234 4111 1111 1111 1111",  # a 4-digit number, then a card
    "PAN-4539148803436467 cc_4539148803436467 x-4539148803436467",
    "SSN-536-22-1418 a536-22-1418 B-536 22 1418",
    "ref9 4111 1111 1111 1111 end",
    "tel 0044 20 7946 0018, +1 415 867 5309; (11) 98765-4321 / 86 6232-8601",
    "ab12 345 678 901 Steuer-ID 12 345 678 901 a1 2 345 678 901",
    "x12345678Z 12345678Z Y1234567X aY1234567X",
    "DE89 3704 0044 0532 0130 00 xDE89370400440532013000 GB29NWBK60161331926819",
    "QQ 12 34 56 C aQQ123456C",
    "10.20.30.40 a10.20.30.40 1.2.3.4.5 v10.20.30.40",
    "RSSMRA85T10A562S xRSSMRA85T10A562S RSSMRAURTMLARSNL rssmra85t10a562s",
    "555-0123 x555-0123 5550123456 a5550123456 5527 9357 a5527 9357",
    "1 85 05 2A 123 456 78 a185052A12345678",
)


def _random_texts(count: int) -> Iterator[str]:
    """Digit groups, separators, letters and glued labels in every order."""
    rng = random.Random(SEED)
    atoms = (
        "1", "0", "4", "9", "44", "415", "4111", "1111", "867", "5309", "0018", "2A", "12",
        " ", " ", "  ", "-", ".", "(", ")", "+", "/", ":", "_", "x", "X", "ext ", "a", "Z",
        "AB", "QQ", "DE89", "RSSMRA", "\n", ",",
    )  # fmt: skip
    for _ in range(count):
        yield "".join(rng.choice(atoms) for _ in range(rng.randint(4, 40)))


def test_most_number_patterns_are_led(classifier: Classifier) -> None:
    led_detectors = {p.detector for p in classifier._patterns_by_id if p.lead is not None}
    assert {"pii.phone", "fin.payment_card", "gov.us_ssn", "fin.iban", "net.ipv4"} <= led_detectors
    assert "gov.it_codice_fiscale" in led_detectors


def test_same_hits_on_adversarial_text(
    classifier: Classifier, reference: Reference, path: str
) -> None:
    assert assert_same(classifier, reference, iter(ADVERSARIAL)) == len(ADVERSARIAL)
    assert assert_same(classifier, reference, _random_texts(20_000)) == 20_000


def test_same_hits_on_the_labelled_corpus(
    classifier: Classifier, reference: Reference, path: str
) -> None:
    lines = (DATA / "inspect_corpus.jsonl").read_text().splitlines()
    texts = (json.loads(line)["text"] for line in lines if line.strip())
    assert assert_same(classifier, reference, texts) == len(lines)


def test_same_hits_on_real_code_and_prose(
    classifier: Classifier, reference: Reference, path: str
) -> None:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("*.py"))[::3] + sorted(root.rglob("*.rst"))[:50]
    texts = (path.read_text(encoding="utf-8", errors="replace") for path in files)
    assert assert_same(classifier, reference, texts) > 50


def test_a_later_start_is_found_by_the_rescan(
    classifier: Classifier, reference: Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    rescans: list[int] = []
    original = classifier._rescan

    def counting(*args: Any) -> int | None:
        rescans.append(1)
        return original(*args)

    monkeypatch.setattr(classifier, "_rescan", counting)
    data = normalize.to_bytes("x1 415 867 5309")
    hits = classifier._scan(data)
    assert rescans
    assert sorted(hits) == reference.hits(data)
    assert any(data[start:end].startswith(b" 415") for _, start, end in hits)
    # A digit inside a longer token has no boundary anywhere before it: no rescan.
    rescans.clear()
    assert classifier._scan(normalize.to_bytes("abc123456789 ")) == []
    assert rescans == []


def test_lead_start_takes_the_widest_alternative_that_fits() -> None:
    card = Lead(((rb"[^0-9A-Za-z_.\-]",), (rb"[A-Za-z]", rb"[_\-]")))
    assert card.start(b"PAN-4", 4) == 2
    assert card.start(b" 4", 1) == 0
    assert card.start(b"x4", 1) is None
    assert card.start(b"4", 0) is None
    assert led(rb"[^0-9]", b"x").lead.start(b"a4", 1) == 0
    overlapping = Lead(((rb"[a-z]",), (rb"[a-z]", rb"[a-z]")))
    assert overlapping.start(b"ab4", 2) == 0  # leftmost
    with pytest.raises(ValueError, match="within one byte"):
        Lead(((rb"[a]",), (rb"[a]", rb"[b]", rb"[c]")))


def test_digit_dense_input_takes_the_whole_databases() -> None:
    rows = "\n".join(f"{n},{n * 7},{n * 13 % 1000}" for n in range(3000)).encode()
    prose = b"The team reviewed the rollout plan, 3 owners and 2 risks. " * 400
    assert _digit_dense(rows)
    assert not _digit_dense(prose)
    assert not _digit_dense(rows[:2048])  # small inputs are not sampled
