"""`pii.phone` on libphonenumber: extensions, local numbers, international formats, regions
from the config, and the shapes that are not phone numbers."""

from __future__ import annotations

import pytest

from gateway.config import InspectionConfig
from gateway.inspect import normalize
from gateway.inspect.classification import Classifier
from gateway.inspect.phones import PhoneValidator, check_regions


def detectors(text: str, **config: object) -> list[str]:
    classifier = Classifier(InspectionConfig.model_validate(config))
    return [f.detector for f in classifier.scan(normalize.to_bytes(text))]


@pytest.fixture(scope="module")
def default() -> Classifier:
    return Classifier(InspectionConfig())


@pytest.mark.parametrize(
    "text",
    [
        "call me at (415) 867-5309 x1234 tomorrow",
        "Phone: 883-237-8876x232",
        "office 212.736.5000 ext. 12",
        "+1-912-490-4047x96669",
        "reach me on 867-5309 after five",  # 7-digit local number after a phone word
        "Tel. 020 7946 0018",
        "+44(0)131 4960979",
        "+49 30 12345678",
        "+33 1 23 45 67 89",
        "mobile +91 98250 12345",
        "(02328) 60129",
        "05 45 23 28 60",
        "call 3680496644",  # an unseparated Italian mobile after a phone word
        "001-335-504-9258",
        "+55 14 7483-3788",
        "+447700900123",
        "name,phone,city\nAnna,0118 496 0982,Leeds\n",  # a CSV column headed `phone`
    ],
)
def test_phone_numbers_are_found(default: Classifier, text: str) -> None:
    found = [f.detector for f in default.scan(normalize.to_bytes(text))]
    assert found == ["pii.phone"], text


@pytest.mark.parametrize(
    "text",
    [
        "Free Software Foundation, 51 Franklin Street, Fifth Floor, Boston, MA 02110-1301 USA",
        "order 867-5309 shipped",  # 7 digits without a phone word
        "on 05-12-2023",
        "call 555-0123 (fiction)",
        "(415) 555-0142",
        "ISSN 0377-0427",
        "version 3.5.0.1",
        "                1.519 829 846 0570 e-16  0.0",
        "born July 06 1956",
        "x = 1234567890",
        "Decimal('123456789')",
        "https://doi.org/10.1111/0081-1750.00098",
    ],
)
def test_shapes_that_are_not_phone_numbers(default: Classifier, text: str) -> None:
    found = [f.detector for f in default.scan(normalize.to_bytes(text))]
    assert "pii.phone" not in found, text


def test_the_extension_belongs_to_the_number() -> None:
    check = PhoneValidator(["US"])
    data = normalize.to_bytes("call 415-867-5309 x1234")
    start = data.index(b"415") - 1
    assert check(data, start, len(data))
    assert check(data, start, data.index(b" x1234") + 1)


def test_regions_come_from_the_config() -> None:
    german = "Rückruf unter 030 12345678 bitte"
    assert detectors(german) == ["pii.phone"]
    assert detectors(german, phone_regions=["DE"]) == ["pii.phone"]
    assert detectors(german, phone_regions=["US"]) == []


def test_an_unknown_region_is_named() -> None:
    with pytest.raises(ValueError, match=r"inspection.phone_regions\[1\]: 'XX'"):
        check_regions(["US", "XX"])
    with pytest.raises(ValueError, match="phone_regions"):
        Classifier(InspectionConfig(phone_regions=["ZZ"]))
