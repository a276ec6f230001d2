"""What a detector reports: its id, the level it implies, how many times, and where.

Locations are for in-process consumers only (a redaction stage replaces exactly those
characters). They are never logged, exported, put in spans, errors or `Route` answers: the
`Finding` dataclass leaves them out of its repr and its equality.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from gateway.levels import Level


class Location(NamedTuple):
    """Where a finding sits in the request.

    `part` is the path of the request field the value sits in, as `request_parts` names it
    (`messages[2].content`, `messages[1].tool_calls[0].arguments`, `tools[0].description`,
    `tools[0].parameters["properties"]["card"]["default"]`, `stop[1]`). `start`/`end` are str
    offsets into that field's original text, as the provider adapter sends it. A value found
    only in a decoded form (base64, percent-encoding, a reversed bidi run) has the whole encoded
    token as its location.

    A named tuple, not a frozen dataclass: the inspector builds one per finding occurrence and
    hashes each to merge duplicates, and a named tuple is built in half the time and hashed in
    C. It is immutable all the same; unlike the dataclass it compares equal to a plain
    `(part, start, end)` tuple.
    """

    part: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Finding:
    """A detector that found something: its id, the level it implies, how many times."""

    detector: str
    level: Level
    count: int
    # In-process only: never logged, exported or returned.
    locations: tuple[Location, ...] = field(default=(), repr=False, compare=False)
