"""The `pii.phone` decision as it was first written: `phonenumbers.parse` + `is_valid_number`
for every candidate, for every configured region. The gateway's `PhoneValidator` replays the
library from its metadata for the common shapes; the tests and `bench/bench_phones.py` compare
it with this reference, which must not change with it."""

from __future__ import annotations

import phonenumbers
from phonenumbers import ValidationResult

from gateway.inspect import phones


class ReferencePhoneValidator(phones.PhoneValidator):
    """The library-only decision, for the same regions and cue setting."""

    def __call__(self, data: bytes, start: int, end: int) -> bool:
        """The decision with libphonenumber's parser and validator for every candidate."""
        if phones._inside_number(data, start, end):
            return False
        start, end = phones._core(data, start, end)
        if end - start < 7:
            return False
        text = data[start:end]
        if phones._ZIP4.fullmatch(text) or phones._NOT_PHONE_BEFORE.search(
            data, max(0, start - 12), start
        ):
            return False
        number = text
        ext = phones._EXTENSION.search(text)
        if ext is not None:
            number = text[: ext.start()]
        digits = bytes(b for b in number if 48 <= b <= 57)
        if len(digits) == 11 and digits.startswith(b"1"):
            digits = digits[1:]
        if (len(digits) == 10 and digits[3:6] == b"555" and digits[6:8] == b"01") or (
            len(digits) == 7 and digits.startswith(b"55501")
        ):
            return False
        if phones._DATE_SHAPE.fullmatch(number):
            return False
        cued: bool | None = None
        if self.cue or len(digits) < 8:
            # Short numbers and id-like shapes need a phone word (or a phone column).
            cued = self._cued(data, start)
            if not cued:
                return False
        possible = False
        for parsed in list(self._parses(text.decode("ascii", "replace"))):
            if phonenumbers.is_valid_number(parsed):
                return True
            reason = phonenumbers.is_possible_number_with_reason(parsed)
            if reason in (ValidationResult.IS_POSSIBLE, ValidationResult.IS_POSSIBLE_LOCAL_ONLY):
                possible = True
        if not possible:
            return False
        if phones._NANP_SHAPE.fullmatch(number.strip()) or number.startswith(b"+"):
            # Written in full NANP groups, or in E.164 form with its `+`: no id looks so.
            return True
        return cued if cued is not None else self._cued(data, start)

    @staticmethod
    def _cued(data: bytes, start: int) -> bool:
        """A phone word in the 40 bytes before the number, or the number sits in a delimited
        table's column whose header is a phone word (a CSV export)."""
        if phones._CUE.search(data, max(0, start - 40), start) is not None:
            return True
        return phones._csv_phone_column(data, start + 1)
