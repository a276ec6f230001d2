"""Data classification: one Hyperscan pass over the normalized request, validators on the
candidates, findings as (detector id, level, count). No matched value is kept or returned.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import hyperscan

from gateway.config import InspectionConfig
from gateway.errors import InternalError
from gateway.inspect import validators as v
from gateway.inspect.detectors import BUILTINS, ENCODED, ENCODED_BASE64, KINDS, SUBSUMED_BY
from gateway.inspect.findings import Finding, Location
from gateway.inspect.leads import Lead, Led
from gateway.inspect.normalize import normalize
from gateway.inspect.segments import ScanBuffer, Segment
from gateway.levels import Level


@dataclass(frozen=True, slots=True)
class _Pattern:
    detector: str
    expression: bytes
    flags: int
    validator: v.Validator | None
    locate: v.Locator | None = None
    kind: v.Kind | None = None  # replaces `validator`: answers the detector id, or None
    database: int = 0
    # Characters a finding's span keeps at its ends (boundary characters are trimmed).
    inner: frozenset[int] = v.ALNUM
    # Checked before the start Hyperscan reports, not scanned (`gateway.inspect.leads`).
    lead: Lead | None = None

    @property
    def whole(self) -> bytes:
        """The expression with its lead: what a match means."""
        return self.expression if self.lead is None else self.lead.expression + self.expression


def marker_id(marker: str) -> str:
    """`"INTERNAL ONLY"` -> `"marker.internal_only"`."""
    return "marker." + re.sub(r"[^a-z0-9]+", "_", marker.lower()).strip("_")


def dictionary_id(name: str) -> str:
    return f"dict.{name}"


def pattern_id(name: str) -> str:
    return f"regex.{name}"


def _literal(term: str) -> bytes:
    """A term as a Hyperscan expression: metacharacters escaped, any run of whitespace matching
    any run of whitespace, word boundaries only where the term starts or ends with a word
    character (so `C++` still matches)."""
    words = normalize_term(term).split()
    body = r"\s+".join("".join(_escape(ch) for ch in word) for word in words)
    first, last = words[0][0], words[-1][-1]
    prefix = r"\b" if first.isalnum() or first == "_" else ""
    suffix = r"\b" if last.isalnum() or last == "_" else ""
    return (prefix + body + suffix).encode("utf-8")


def normalize_term(term: str) -> str:
    return unicodedata.normalize("NFKC", term).strip()


def _escape(char: str) -> str:
    if char.isalnum() or not char.isascii():
        return char
    return f"\\x{ord(char):02x}"


def _text_flags(expression: bytes) -> int:
    return hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_UCP if not expression.isascii() else 0


def _compile(
    patterns: list[_Pattern], ids: list[int] | None = None, *, whole: bool = False
) -> hyperscan.Database:
    """`ids`: what each pattern reports as (default: its position). `whole`: each pattern with
    its lead (the database for digit-dense input and for `_rescan`)."""
    return _database(
        tuple(p.whole if whole else p.expression for p in patterns),
        tuple(ids if ids is not None else range(len(patterns))),
        tuple(p.flags for p in patterns),
    )


@lru_cache(maxsize=32)
def _database(
    expressions: tuple[bytes, ...], ids: tuple[int, ...], flags: tuple[int, ...]
) -> hyperscan.Database:
    """A compiled database, shared by every Classifier built from the same patterns in this
    process: compiling takes ~0.5 s, and a database is read-only (each thread scans it with
    scratch space of its own)."""
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(
        expressions=list(expressions), ids=list(ids), elements=len(expressions), flags=list(flags)
    )
    return database


def _operator_pattern(index: int, name: str, regex: str) -> _Pattern:
    """Compiles the operator's regex alone first, so a bad one is named in the error."""
    expression = regex.encode("utf-8")
    where = f"inspection.patterns[{index}] (id {name!r})"
    last_error = ""
    # Leftmost start of match lets repeated suffixes (`TICKET-\d+`) count once; a few
    # expressions cannot track it, and those count distinct match ends instead.
    for som in (hyperscan.HS_FLAG_SOM_LEFTMOST, 0):
        candidate = _Pattern(pattern_id(name), expression, som | _text_flags(expression), None)
        try:
            _compile([candidate])
        except hyperscan.error as exc:
            last_error = str(exc)
            continue
        return candidate
    hint = (
        " (Hyperscan supports no lookaround and no backreferences)" if "ssert" in last_error else ""
    )
    raise ValueError(f"{where}: invalid regular expression: {last_error}{hint}")


class Classifier:
    """Compiled once from the inspection config; `scan` is safe to call from any thread."""

    def __init__(self, config: InspectionConfig) -> None:
        self._levels = self._resolve_levels(config)
        patterns = self._patterns(config)
        self._patterns_by_id = tuple(
            p
            for p in patterns
            if p.detector in self._levels
            or p.detector == ENCODED_BASE64
            or (p.kind is not None and KINDS.get(p.detector, frozenset()) & self._levels.keys())
        )
        # Patterns report their position in `_patterns_by_id`, whichever database holds them.
        groups: dict[int, list[int]] = {}
        for index, pattern in enumerate(self._patterns_by_id):
            groups.setdefault(pattern.database, []).append(index)
        # Two compilations of the same patterns, reporting the same hits: led (leads checked
        # in Python, fast on text) and whole (each pattern with its lead, faster where digits
        # are dense: logs, CSV, number arrays keep the cores' counting states alive without
        # the boundary in front). The whole ones also serve `_rescan`.
        self._databases = tuple(
            _compile([self._patterns_by_id[i] for i in ids], ids)
            for _, ids in sorted(groups.items())
        )
        self._whole_databases = tuple(
            _compile([self._patterns_by_id[i] for i in ids], ids, whole=True)
            if any(self._patterns_by_id[i].lead is not None for i in ids)
            else database
            for database, (_, ids) in zip(self._databases, sorted(groups.items()), strict=True)
        )
        position = {group: n for n, group in enumerate(sorted(groups))}
        self._database_of = tuple(position[p.database] for p in self._patterns_by_id)
        self._local = threading.local()

    @property
    def _patterns_by_id(self) -> tuple[_Pattern, ...]:
        return self._pattern_table

    @_patterns_by_id.setter
    def _patterns_by_id(self, patterns: tuple[_Pattern, ...]) -> None:
        self._pattern_table = patterns
        # Per pattern, what `_findings` needs, unpacked once: (locate, start-of-match tracked,
        # kind, validator, detector).
        self._plans = tuple(
            (p.locate, bool(p.flags & _SOM), p.kind, p.validator, p.detector, p.inner)
            for p in patterns
        )
        self._encoded = next(
            (i for i, p in enumerate(patterns) if p.detector == ENCODED_BASE64), -1
        )
        self._leads = tuple(p.lead for p in patterns)
        self._any_lead = any(lead is not None for lead in self._leads)

    @property
    def detector_levels(self) -> dict[str, Level]:
        """Every active detector id and the level a finding of it implies."""
        return dict(self._levels)

    @staticmethod
    def _known(config: InspectionConfig) -> dict[str, Level]:
        known = {b.id: b.level for b in BUILTINS}
        known.update({marker_id(m): level for m, level in config.markers.items()})
        known.update({dictionary_id(d.id): d.level for d in config.dictionaries})
        known.update({pattern_id(p.id): p.level for p in config.patterns})
        return known

    def _resolve_levels(self, config: InspectionConfig) -> dict[str, Level]:
        known = self._known(config)
        # A typo in an override or a disable list would silently weaken classification.
        for field, names in (("levels", config.levels), ("disabled", config.disabled)):
            for name in names:
                if name not in known:
                    raise ValueError(
                        f"inspection.{field}: unknown detector {name!r}; known detectors: "
                        + ", ".join(sorted(known))
                    )
        for field, items in (("dictionaries", config.dictionaries), ("patterns", config.patterns)):
            seen: set[str] = set()
            for item in items:
                if item.id in seen:
                    raise ValueError(f"inspection.{field}: id {item.id!r} is used twice")
                seen.add(item.id)
        levels = {**known, **config.levels}
        return {name: level for name, level in levels.items() if name not in config.disabled}

    @staticmethod
    def _patterns(config: InspectionConfig) -> list[_Pattern]:
        som = hyperscan.HS_FLAG_SOM_LEFTMOST
        patterns = [
            _Pattern(
                b.id,
                expr.core if isinstance(expr, Led) else expr,
                (som if b.som else 0) | (hyperscan.HS_FLAG_CASELESS if b.caseless else 0),
                b.configure(config) if b.configure is not None else b.validator,
                b.locate,
                b.kind,
                b.database,
                b.inner,
                expr.lead if isinstance(expr, Led) else None,
            )
            for b in (*BUILTINS, ENCODED)
            for expr in b.patterns
        ]
        # A lead is confirmed before the start Hyperscan reports: it needs that start.
        assert all(p.flags & som for p in patterns if p.lead is not None)
        for marker in config.markers:
            if not marker.strip():
                raise ValueError("inspection.markers: a marker must not be empty")
            expr = _literal(marker)
            patterns.append(_Pattern(marker_id(marker), expr, som | _text_flags(expr), None))
        for index, dictionary in enumerate(config.dictionaries):
            for term_index, term in enumerate(dictionary.terms):
                if not term.strip():
                    raise ValueError(
                        f"inspection.dictionaries[{index}].terms[{term_index}]: empty term"
                    )
                expr = _literal(term)
                flags = som | hyperscan.HS_FLAG_CASELESS | _text_flags(expr)
                patterns.append(_Pattern(dictionary_id(dictionary.id), expr, flags, None))
        patterns.extend(_operator_pattern(i, p.id, p.regex) for i, p in enumerate(config.patterns))
        return patterns

    def _scratches(self) -> tuple[tuple[hyperscan.Scratch, ...], tuple[hyperscan.Scratch, ...]]:
        """(led, whole): one scratch per database."""
        # Hyperscan scratch space is per thread and database; made by each thread that scans.
        scratches: tuple[tuple[hyperscan.Scratch, ...], ...] | None = getattr(
            self._local, "scratches", None
        )
        if scratches is None:
            scratches = tuple(
                tuple(hyperscan.Scratch(database) for database in databases)
                for databases in (self._databases, self._whole_databases)
            )
            self._local.scratches = scratches
        return scratches[0], scratches[1]

    def scan(self, buffer: ScanBuffer | bytes) -> tuple[Finding, ...]:
        """Findings in the buffer (its segments mapped back to request parts), sorted by id.
        Plain bytes (normalized and padded by `normalize.to_bytes`) are scanned as one part
        named "text".

        Raises `InternalError` when the scan or a validator fails: a request whose content
        could not be inspected must not be routed. The message names the detector only.
        """
        if isinstance(buffer, bytes):
            buffer = ScanBuffer.of_bytes(buffer)
        hits = self._scan(buffer.data)
        if not hits:
            return ()
        located: dict[str, list[list[Location]]] = {}
        marker = self._encoded
        encoded = [hit for hit in hits if hit[0] == marker]
        if encoded:
            hits = [hit for hit in hits if hit[0] != marker]
        if hits:
            self._locate(buffer, self._accept(buffer.data, hits), located)
        if encoded:
            # Base64 of printable text: decoded once (no recursion) and scanned again.
            decoded = self._decoded_buffer(buffer, encoded)
            if decoded is not None:
                more = self._scan(decoded.data)
                more = [hit for hit in more if hit[0] != self._encoded]
                if more:
                    self._locate(decoded, self._accept(decoded.data, more), located)
        return self._assemble(located)

    def _scan(self, data: bytes) -> list[tuple[int, int, int]]:
        """(pattern, start, end) of every match, as if each pattern were scanned with its lead."""
        hits: list[tuple[int, int, int]] = []
        try:
            led, whole = self._scratches()
            if _digit_dense(data):
                for database, scratch in zip(self._whole_databases, whole, strict=True):
                    database.scan(data, match_event_handler=_collect, context=hits, scratch=scratch)
                return hits
            for database, scratch in zip(self._databases, led, strict=True):
                database.scan(data, match_event_handler=_collect, context=hits, scratch=scratch)
            if hits and self._any_lead:
                hits = self._with_leads(data, hits, whole)
        except hyperscan.error as exc:
            raise InternalError(
                f"inspection failed: the pattern scan raised {type(exc).__name__}",
                reason="INSPECTION_FAILED",
            ) from None
        return hits

    def _with_leads(
        self, data: bytes, hits: list[tuple[int, int, int]], whole: tuple[hyperscan.Scratch, ...]
    ) -> list[tuple[int, int, int]]:
        """Led patterns' hits moved to their lead's start; dropped where no lead fits."""
        leads = self._leads
        out = []
        for hit in hits:
            lead = leads[hit[0]]
            if lead is None:
                out.append(hit)
                continue
            index, start, end = hit
            single = lead.single  # the common lead, one class: checked without a call
            if single is not None:
                begin = start - 1 if start and data[start - 1] in single else None
            else:
                begin = lead.start(data, start)
            if begin is not None:
                out.append((index, begin, end))
            elif data[start : end - 1].translate(None, lead.others):
                # A later start of the core inside this match may have its lead: the window
                # is scanned again with the whole pattern (see gateway.inspect.leads).
                found = self._rescan(data, index, start - lead.width, end, whole)
                if found is not None:
                    out.append((index, found, end))
        return out

    def _rescan(
        self, data: bytes, index: int, begin: int, end: int, whole: tuple[hyperscan.Scratch, ...]
    ) -> int | None:
        """The leftmost start of pattern `index` (with its lead) ending at `end`, if any."""
        begin = max(0, begin)
        hits: list[tuple[int, int, int]] = []
        group = self._database_of[index]
        self._whole_databases[group].scan(
            data[begin:end], match_event_handler=_collect, context=hits, scratch=whole[group]
        )
        for pattern, start, stop in hits:
            if pattern == index and stop == end - begin:
                return begin + start
        return None

    def _decoded_buffer(
        self, buffer: ScanBuffer, hits: list[tuple[int, int, int]]
    ) -> ScanBuffer | None:
        data = buffer.data
        decoded = ScanBuffer()
        for _, _, end in hits:
            start = v.base64_start(data, end)
            text = v.base64_text(data, start, end - 1)
            if text is None:
                continue
            segment = buffer.segment_at(start)
            if segment is None:
                continue
            whole = segment.source_span(data, start, end - 1)
            decoded.add(
                Segment(segment.path, segment.source, normalize(text), 0, 0, (), whole, True)
            )
        if not decoded.segments:
            return None
        decoded.seal()
        return decoded

    def _accept(
        self, data: bytes, hits: list[tuple[int, int, int]]
    ) -> dict[str, list[tuple[int, int]]]:
        """Validated candidates: detector -> exact spans in `data` (boundaries trimmed)."""
        plans = self._plans
        levels = self._levels
        accepted: dict[str, list[tuple[int, int]]] = {}
        # Several ends per start (a number followed by more digit groups): the longest valid
        # one counts. Sorted descending, each (pattern, start) meets its longest end first.
        if len(hits) > 1:
            hits.sort(reverse=True)
        done: set[tuple[int, int] | tuple[int, int, str]] = set()
        index = hits[0][0]
        try:
            for index, start, end in hits:
                locate, som, kind, validator, detector, inner = plans[index]
                if locate is not None:
                    # Scanned without start-of-match tracking: Hyperscan reports start 0.
                    start = locate(data, end)
                elif not som:
                    start = end
                span: tuple[int, int] | None = None
                if kind is not None:
                    # Each detector the pattern serves takes its own longest valid end.
                    found = kind(data, start, end)
                    if found is None or found not in levels:
                        continue
                    detector = found
                    key: tuple[int, int] | tuple[int, int, str] = (index, start, detector)
                    if key in done:
                        continue
                else:
                    key = (index, start)
                    if key in done:
                        continue
                    if validator is not None:
                        verdict = validator(data, start, end)
                        if not verdict:
                            continue
                        if isinstance(verdict, tuple):
                            span = verdict
                done.add(key)
                if span is None:
                    span = _trim(data, start, end, inner)
                spans = accepted.get(detector)
                if spans is None:
                    accepted[detector] = [span]
                else:
                    spans.append(span)
        except Exception as exc:
            # Exception text may quote the candidate (UnicodeDecodeError does): drop it.
            failed = self._patterns_by_id[index].detector
            raise InternalError(
                f"inspection failed: detector {failed} raised {type(exc).__name__}",
                reason="INSPECTION_FAILED",
                detector=failed,
            ) from None
        for detector, specific in SUBSUMED_BY.items():
            if detector in accepted and not specific.isdisjoint(accepted):
                accepted[detector] = _outside(accepted[detector], accepted, specific)
        return accepted

    @staticmethod
    def _locate(
        buffer: ScanBuffer,
        accepted: dict[str, list[tuple[int, int]]],
        located: dict[str, list[list[Location]]],
    ) -> None:
        locate = buffer.locate
        for detector, spans in accepted.items():
            out = located.setdefault(detector, [])
            for start, end in spans:
                found = locate(start, end)
                if found:
                    out.append(found)

    def _assemble(self, located: dict[str, list[list[Location]]]) -> tuple[Finding, ...]:
        findings = []
        levels = self._levels
        for detector in sorted(located):
            occurrences = located[detector]
            if not occurrences:
                continue
            if len(occurrences) == 1:
                findings.append(Finding(detector, levels[detector], 1, tuple(occurrences[0])))
                continue
            # Locations are (part, start, end) tuples: their natural order.
            locations = tuple(sorted({loc for occurrence in occurrences for loc in occurrence}))
            count = _count_disjoint(occurrences)
            findings.append(Finding(detector, levels[detector], count, locations))
        return tuple(findings)


def _trim(data: bytes, start: int, end: int, inner: frozenset[int]) -> tuple[int, int]:
    """The candidate without the boundary characters its pattern consumed around it."""
    limit = 3
    while limit and start < end and data[start] not in inner:
        start += 1
        limit -= 1
    limit = 3
    while limit and end > start and data[end - 1] not in inner:
        end -= 1
        limit -= 1
    return start, end


_SOM = hyperscan.HS_FLAG_SOM_LEFTMOST

_DIGITS = b"0123456789"
# Above this share of digits the whole patterns scan faster than the led ones (100 KB, this
# machine: prose at 3% digits 0.6x the time, prose with every tenth word a number at 12% 1.1x,
# logs at 40% 1.3x, a JSON array of floats 2.2x). Checked on a sample of ~2 KB; below 16 KB the
# difference is a few microseconds and not worth the sample.
_DENSE_DIGITS = 0.10
_DENSE_MIN_BYTES = 16_384


def _digit_dense(data: bytes) -> bool:
    if len(data) < _DENSE_MIN_BYTES:
        return False
    sample = data[:: max(1, len(data) // 2048)]
    return len(sample) - len(sample.translate(None, _DIGITS)) > _DENSE_DIGITS * len(sample)


def _collect(pattern: int, start: int, end: int, flags: int, hits: Any) -> None:
    """Hyperscan's match callback: `hits` is the scan's list of (pattern, start, end)."""
    hits.append((pattern, start, end))


def _count_disjoint(occurrences: list[list[Location]]) -> int:
    """Overlapping occurrences (the same phone number seen by two patterns, a value seen in a
    part and in its decoded view) are one. Counted on each occurrence's first location."""
    if len(occurrences) == 1:
        return 1
    count, part, reach = 0, "", -1
    for first in sorted((o[0] for o in occurrences), key=lambda loc: (loc.part, loc.start)):
        if first.part != part or first.start >= reach:
            count += 1
            part, reach = first.part, first.end
        else:
            reach = max(reach, first.end)
    return count


def _outside(
    spans: list[tuple[int, int]], accepted: dict[str, list[tuple[int, int]]], others: frozenset[str]
) -> list[tuple[int, int]]:
    covering = [span for other in others for span in accepted.get(other, ())]
    if not covering:
        return spans
    # One boundary byte of slack on each side: patterns consume their boundary characters.
    return [
        (start, end)
        for start, end in spans
        if not any(s - 1 <= start and end <= e + 1 for s, e in covering)
    ]
