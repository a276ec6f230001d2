"""Leading boundaries checked in Python instead of scanned by Hyperscan.

Hyperscan is fast when every pattern in a database starts with something rare in text (a
digit, a literal such as `sk-`): it skips ahead over bytes that cannot start a match. A pattern
that starts with a boundary class ("not a letter or digit", which is nearly every byte of
prose) or with letters keeps the whole database stepping byte by byte: on 100 KB of prose the
scan cost ~5 ns per byte with them and under half that without them.

So a pattern that needs a boundary before its value is written as `Led(lead, core)`: Hyperscan
scans the core (from the value's first digit on) with leftmost start-of-match, and `Lead.start`
checks the lead just before the reported start. The result is exactly what scanning
`lead + core` would report (same pattern, same leftmost start, same end), because:

- every match of `lead + core` ending at `end` contains a match of the core ending at `end`, so
  Hyperscan reports that end, with the leftmost core start `s0`;
- when the lead matches right before `s0`, its widest match there gives the leftmost start
  (lead alternatives differ in width by at most one byte, so no later core start can begin
  further left);
- when it does not, a later core start can only follow a byte the lead can end with inside the
  core's match; if there is one, the classifier scans that small window again with the whole
  pattern (`Classifier._rescan`); if there is none, there is no match.

tests/unit/test_inspect_leads.py compares both ways on real and adversarial text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def byte_class(expression: bytes) -> frozenset[int]:
    """The bytes a one-byte class expression (`rb"[^0-9A-Za-z\\-.]"`) matches."""
    pattern = re.compile(expression)
    return frozenset(b for b in range(256) if pattern.fullmatch(bytes([b])))


@dataclass(frozen=True)
class Lead:
    """Alternatives, each a sequence of one-byte class expressions, widest first."""

    alternatives: tuple[tuple[bytes, ...], ...]
    _checks: tuple[tuple[frozenset[int], ...], ...] = field(init=False, repr=False)
    # The lead when it is one class: one set lookup per candidate.
    single: frozenset[int] | None = field(init=False, repr=False)
    # Every byte but those a lead can end with: `data.translate(None, others)` keeps only the
    # bytes after which a later core start could have its lead.
    others: bytes = field(init=False, repr=False)
    width: int = field(init=False, repr=False)  # the widest alternative

    def __post_init__(self) -> None:
        alternatives = sorted(self.alternatives, key=len, reverse=True)
        widths = [len(alternative) for alternative in alternatives]
        if not widths or min(widths) < 1 or max(widths) - min(widths) > 1:
            raise ValueError("a lead's alternatives must be 1+ bytes wide, within one byte")
        checks = tuple(tuple(byte_class(c) for c in alt) for alt in alternatives)
        ends = frozenset().union(*(classes[-1] for classes in checks))
        object.__setattr__(self, "alternatives", tuple(alternatives))
        object.__setattr__(self, "_checks", checks)
        object.__setattr__(self, "single", checks[0][0] if widths == [1] else None)
        object.__setattr__(self, "others", bytes(b for b in range(256) if b not in ends))
        object.__setattr__(self, "width", widths[0])

    @property
    def expression(self) -> bytes:
        return b"(?:" + b"|".join(b"".join(alternative) for alternative in self.alternatives) + b")"

    def start(self, data: bytes, core_start: int) -> int | None:
        """Where the lead starts when it ends right at `core_start` (leftmost), else None."""
        single = self.single
        if single is not None:
            return core_start - 1 if core_start and data[core_start - 1] in single else None
        for classes in self._checks:
            begin = core_start - len(classes)
            if begin < 0:
                continue
            for offset, allowed in enumerate(classes):
                if data[begin + offset] not in allowed:
                    break
            else:
                return begin
        return None


@dataclass(frozen=True)
class Led:
    """A pattern whose leading boundary is confirmed in Python (see the module docstring)."""

    lead: Lead
    core: bytes

    @property
    def expression(self) -> bytes:
        """The whole pattern, as it would be scanned without the split."""
        return self.lead.expression + self.core


def led(lead: bytes, core: bytes) -> Led:
    """A pattern led by one boundary class."""
    return Led(Lead(((lead,),)), core)
