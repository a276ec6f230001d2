"""Phone validation per candidate: the fast path (libphonenumber's metadata precompiled,
`phone_metadata`) against the library-only reference (`tests/phone_reference.py`: parse +
is_valid_number), on typical candidates. Target: <= ~8 us p50 for common candidates.

Both run in this process, in alternating small batches, so machine load skews both alike;
each figure is the median over batches of the mean time per call in a batch.

    .venv/bin/python bench/bench_phones.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.inspect import normalize  # noqa: E402
from gateway.inspect.phones import DEFAULT_REGIONS, PhoneValidator  # noqa: E402
from tests.phone_reference import ReferencePhoneValidator  # noqa: E402

# (label, text, candidate, cue): the candidate as the scanner hands it over, one boundary
# character either side.
CASES = (
    ("+44 international", "Contact jane.roe@acme-corp.io or +44 20 7946 0018 about server",
     "+44 20 7946 0018", False),
    ("+1 NANP", "ring +1 415 867 5309 today", "+1 415 867 5309", False),
    ("(415) national", "our office (415) 867-5309 is open", "(415) 867-5309", False),
    ("00 international", "dial 0049 30 12345678 then", "0049 30 12345678", False),
    ("DE 030 national", "Rückruf unter 030 12345678 bitte", "030 12345678", False),
    ("GB 020 national", "or 020 7946 0018 later", "020 7946 0018", False),
    ("invalid national", "ref 0798 3682 9535 closed", "0798 3682 9535", False),
    ("7-digit, no cue", "order 867-5309 shipped", "867-5309", True),
    ("extension", "call 415-867-5309 x1234 now", "415-867-5309 x1234", False),
    ("letters (library)", "call 1-800-FLOWERS now", "1-800-FLOWERS", False),
)  # fmt: skip


def _span(text: str, candidate: str) -> tuple[bytes, int, int]:
    data = normalize.to_bytes(text)
    start = data.index(candidate.encode()) - 1
    return data, start, start + len(candidate.encode()) + 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per case, both paths")
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    validators = {
        (cue, fast): (PhoneValidator if fast else ReferencePhoneValidator)(DEFAULT_REGIONS, cue=cue)
        for cue in (False, True)
        for fast in (False, True)
    }
    print(f"regions {','.join(DEFAULT_REGIONS)}; p50 per call, library-only vs fast path")
    for label, text, candidate, cue in CASES:
        data, start, end = _span(text, candidate)
        slow, fast = validators[cue, False], validators[cue, True]
        verdict = fast(data, start, end)
        assert verdict == slow(data, start, end), label
        samples: dict[bool, list[float]] = {False: [], True: []}
        deadline = time.perf_counter() + args.seconds
        while time.perf_counter() < deadline:
            for is_fast, check in ((False, slow), (True, fast)):
                began = time.perf_counter_ns()
                for _ in range(args.batch):
                    check(data, start, end)
                samples[is_fast].append((time.perf_counter_ns() - began) / args.batch / 1000)
        before = statistics.median(samples[False])
        after = statistics.median(samples[True])
        print(
            f"  {label:<20} {candidate!r:<22} {'phone' if verdict else 'no':<5} "
            f"library {before:7.2f} us  fast {after:6.2f} us  x{before / after:5.1f}"
        )


if __name__ == "__main__":
    main()
