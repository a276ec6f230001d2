"""The personal-data tier: people, street addresses, dates of birth and health details in free
text, classified by combination (a name alone is not confidential; a name with a birth date,
an address, a contact, an id or a health detail is).

Two engines: rules (personal_rules.py, microseconds) and a spaCy NER pipeline for names
(milliseconds per kilobyte). On the egress path the model reads only what can change whether
the request may leave: the text around a companion finding, or everything when a name alone
is above the cloud's clearance. A request the tier cannot finish (model missing or broken,
text over the budget) raises `PersonalUnavailable`: the caller must not clear it for the cloud.

Findings carry their locations (field path, str offsets into the field's original text) for
the redaction stage; they never leave the process.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.chat import ChatParams
from gateway.config import InspectionConfig, PersonalConfig
from gateway.inspect import personal_rules as rules
from gateway.inspect.findings import Finding, Location
from gateway.levels import Level

log = logging.getLogger(__name__)

DETECTORS = (rules.PERSON, rules.ADDRESS, rules.DOB, rules.HEALTH, rules.LOCATION)
# Components an NER pipeline does not need; excluded at load (half the time of a full run).
_NOT_NER = ["tagger", "parser", "attribute_ruler", "lemmatizer", "morphologizer", "senter"]
_PERSON_LABELS = frozenset({"PERSON", "PER"})
_LOCATION_LABELS = frozenset({"GPE", "LOC"})
# Words NER models take for the start of a name in tickets and notes.
_LEADING = frozenset(
    {
        "customer",
        "patient",
        "client",
        "employee",
        "user",
        "caller",
        "member",
        "resident",
        "nurse",
        "doctor",
        "dr",
        "dr.",
        "mr",
        "mr.",
        "mrs",
        "mrs.",
        "ms",
        "ms.",
        "miss",
        "prof",
        "prof.",
        "dear",
        "hi",
        "hello",
        "hey",
        "name",
        "attn",
        "thanks",
        "regards",
    }
)

# Words NER models take for names in code headers and forms.
_NOT_NAMES = frozenset(
    {
        "copyright",
        "author",
        "authors",
        "maintainer",
        "license",
        "licence",
        "version",
        "name",
        "date",
        "patient",
        "customer",
        "todo",
        "fixme",
        "note",
        "warning",
        "error",
    }
)

Reason = Literal["model_unavailable", "model_failed", "over_budget"]


class PersonalUnavailable(Exception):
    """The tier could not inspect the request; `reason` is safe to log (no content)."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason)
        self.reason: Reason = reason


@dataclass(frozen=True, slots=True)
class Part:
    """One text field of the request: its path, text, and start in the request's sequence of
    fields (so a window can reach from one message into the next)."""

    path: str
    text: str
    base: int


def request_parts(params: ChatParams) -> list[Part]:
    """Every text field of a request the provider adapters forward, in reading order: each
    message's name, content and tool calls' arguments, the tool definitions (description, and
    the JSON schema as `json.dumps(..., ensure_ascii=False)` text, which the offsets of a
    `tools[i].parameters` location refer to), the response schema, the stop sequences."""
    fields: list[tuple[str, str]] = []
    for index, message in enumerate(params.messages):
        fields.append((f"messages[{index}].name", message.name))
        fields.append((f"messages[{index}].content", message.content))
        for call_index, call in enumerate(message.tool_calls):
            fields.append((f"messages[{index}].tool_calls[{call_index}].arguments", call.arguments))
    for index, tool in enumerate(params.tools):
        fields.append((f"tools[{index}].description", tool.description))
        if tool.parameters:
            fields.append((f"tools[{index}].parameters", _json(tool.parameters)))
    if params.response_format is not None and params.response_format.schema:
        fields.append(("response_format.schema", _json(params.response_format.schema)))
    for index, stop in enumerate(params.stop):
        fields.append((f"stop[{index}]", stop))
    parts: list[Part] = []
    base = 0
    for path, text in fields:
        if text:
            parts.append(Part(path, text, base))
            base += len(text) + 1
    return parts


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


_SHARED: dict[tuple[str, int], NerModel] = {}
_SHARED_LOCK = threading.Lock()


class NerModel:
    """A spaCy pipeline loaded once (`inspection.ner_model`: package name or directory), used
    from worker threads. `load` may run in the background; `entities` waits for it."""

    def __init__(self, name: str, chunk_chars: int = 2000) -> None:
        self.name = name
        self.chunk_chars = chunk_chars
        self._nlp: Any = None
        self._error: str | None = None
        self._lock = threading.Lock()
        self._loaded = threading.Event()

    def load(self) -> None:
        """Loads the pipeline (idempotent). A failure is remembered and logged once by type."""
        with self._lock:
            if self._loaded.is_set():
                return
            try:
                import spacy

                nlp = spacy.load(self.name, exclude=_NOT_NER)
                if "ner" not in nlp.pipe_names:
                    raise ValueError("the pipeline has no 'ner' component")
                _drop_unheard_tok2vec(nlp)
                self._nlp = nlp
            except Exception as exc:  # a missing package, a broken directory, a bad version
                self._error = f"{type(exc).__name__}: {exc}"
                log.error("NER model %r could not be loaded: %s", self.name, self._error)
            finally:
                self._loaded.set()

    @classmethod
    def shared(cls, name: str, chunk_chars: int = 2000) -> NerModel:
        """One model per name and chunk size in the process: a config reload (a new pipeline)
        reuses the loaded pipeline instead of loading it again."""
        with _SHARED_LOCK:
            model = _SHARED.get((name, chunk_chars))
            if model is None:
                model = _SHARED[(name, chunk_chars)] = cls(name, chunk_chars)
            return model

    @property
    def ready(self) -> bool:
        return self._loaded.is_set() and self._nlp is not None

    @property
    def error(self) -> str | None:
        return self._error

    def entities(self, text: str) -> list[tuple[str, int, int]]:
        """(label, start, end) of every entity in `text`, read in chunks of at most
        `chunk_chars` split at line or sentence ends."""
        if not self._loaded.is_set():
            self.load()  # waits for a load already running in another thread
        if self._nlp is None:
            raise PersonalUnavailable("model_unavailable")
        chunks = list(chunks_of(text, self.chunk_chars))
        out: list[tuple[str, int, int]] = []
        try:
            docs = self._nlp.pipe([text[s:e] for s, e in chunks])
            for (start, _), doc in zip(chunks, docs, strict=True):
                for ent in doc.ents:
                    out.append((ent.label_, start + ent.start_char, start + ent.end_char))
        except Exception as exc:
            log.error("NER model %r failed: %s", self.name, type(exc).__name__)
            raise PersonalUnavailable("model_failed") from None
        return out


def _drop_unheard_tok2vec(nlp: Any) -> None:
    """Removes a shared `tok2vec` that no loaded component listens to. The small English
    pipelines give their NER its own embedding layer, so the shared one only feeds the excluded
    tagger and parser: running it would cost a third of every call for nothing."""
    if "tok2vec" in nlp.pipe_names and not nlp.get_pipe("tok2vec").listening_components:
        nlp.remove_pipe("tok2vec")


def chunks_of(text: str, size: int) -> Iterable[tuple[int, int]]:
    """Spans of at most `size` characters, cut at the last newline, sentence end or space of
    each window (never inside a word unless a word is longer than the window)."""
    start, length = 0, len(text)
    while start < length:
        end = min(length, start + size)
        if end < length:
            cut = max(text.rfind("\n", start, end) + 1, text.rfind(". ", start, end - 1) + 2)
            if cut <= start + size // 2:
                cut = text.rfind(" ", start, end) + 1
            if cut > start:
                end = cut
        yield start, end
        start = end


@dataclass(frozen=True, slots=True)
class _Span:
    detector: str
    part: int
    start: int
    end: int
    attribution: bool = False


@dataclass(frozen=True, slots=True)
class Scan:
    """A request after the rules: its fields, the rules' spans, the ranges the model must read."""

    parts: list[Part]
    spans: list[_Span]
    ranges: list[tuple[int, int, int]]
    prior: tuple[Finding, ...]

    @property
    def needs_model(self) -> bool:
        return bool(self.ranges)


class PersonalTier:
    """Built once from the config; `scan` is synchronous and thread-safe (run it in a worker
    thread: the model takes milliseconds)."""

    def __init__(self, config: InspectionConfig, model: NerModel | None = None) -> None:
        personal = config.personal
        unknown = sorted(set(personal.levels) - set(DETECTORS))
        if unknown:
            raise ValueError(
                f"inspection.personal.levels: unknown detector {unknown[0]!r}; known: "
                + ", ".join(DETECTORS)
            )
        self.config: PersonalConfig = personal
        self.mode = config.ner
        self.levels = {d: personal.levels.get(d, Level.INTERNAL) for d in DETECTORS}
        self.model = (
            model if model is not None else NerModel(config.ner_model, personal.chunk_chars)
        )
        exact = {c for c in personal.combine.companions if not c.endswith("*")}
        prefixes = tuple(c[:-1] for c in personal.combine.companions if c.endswith("*"))
        self._companion_ids, self._companion_prefixes = frozenset(exact), prefixes

    def companion(self, detector: str) -> bool:
        return detector in self._companion_ids or detector.startswith(self._companion_prefixes)

    def scan(
        self,
        params: ChatParams,
        prior: Sequence[Finding] = (),
        *,
        ceiling: Level | None = None,
        full: bool = False,
    ) -> tuple[Finding, ...]:
        """Personal-data findings of the request.

        `prior`: the pattern tier's findings (companions such as e-mail and phone). `ceiling`:
        the highest clearance among the cloud candidates; the model then reads only text whose
        names could lift the request above it. `full` (or mode `always`, or no ceiling): the
        model reads everything. Raises `PersonalUnavailable`.
        """
        return self.finish(self.prepare(params, prior, ceiling=ceiling, full=full))

    def prepare(
        self,
        params: ChatParams,
        prior: Sequence[Finding] = (),
        *,
        ceiling: Level | None = None,
        full: bool = False,
    ) -> Scan:
        """The rules' half of `scan` (microseconds per KB) and what the model must read;
        `Scan.needs_model` says whether `finish` will run the model."""
        parts = request_parts(params)
        spans: list[_Span] = []
        for index, part in enumerate(parts):
            for detector, start, end in rules.rule_spans(part.text):
                spans.append(_Span(detector, index, start, end))
        ranges = (
            self._ner_ranges(parts, spans, prior, ceiling, full or self.mode == "always")
            if parts
            else []
        )
        return Scan(parts, spans, ranges, tuple(prior))

    def finish(self, scan: Scan) -> tuple[Finding, ...]:
        """The model's half of `scan` (when `scan.needs_model`), then the combination."""
        parts, spans, ranges, prior = scan.parts, list(scan.spans), scan.ranges, scan.prior
        if not parts:
            return ()
        # A model's name inside an address or a labelled city (`Parsons Gateway`, `"city":
        # "Kennedyton"`), or right after an address (`41 Birch Lane, Port Mathewberg`: the
        # town) is a place.
        places = [s for s in spans if s.detector in (rules.ADDRESS, rules.LOCATION)]
        places += [
            _Span(s.detector, s.part, s.end, s.end + 3)
            for s in spans
            if s.detector == rules.ADDRESS
        ]
        if ranges:
            spans.extend(
                s
                for s in self._ner_spans(parts, ranges)
                if s.detector != rules.PERSON or not _inside(s, places)
            )
        spans = [
            _Span(
                s.detector, s.part, s.start, s.end, rules.attribution(parts[s.part].text, s.start)
            )
            if s.detector == rules.PERSON
            else s
            for s in spans
        ]
        return self._findings(parts, _merge(spans), prior)

    # -- which text the model reads ---------------------------------------------------------

    def _ner_ranges(
        self,
        parts: list[Part],
        spans: list[_Span],
        prior: Sequence[Finding],
        ceiling: Level | None,
        full: bool,
    ) -> list[tuple[int, int, int]]:
        """(part, start, end) ranges for the model, within the budget (else fail closed)."""
        if self.mode == "off" and not full:
            return []  # rules only
        whole = [(i, 0, len(p.text)) for i, p in enumerate(parts)]
        if full or ceiling is None or self.levels[rules.PERSON] > ceiling:
            ranges = whole
        elif self.config.combine.level <= ceiling:
            return []  # no name can lift the request above the clearance
        else:
            centres: list[tuple[int, int, int]] = [
                (s.part, s.start, s.end) for s in spans if self.companion(s.detector)
            ]
            for finding in prior:
                if not self.companion(finding.detector):
                    continue
                if not finding.locations:
                    ranges = whole  # a companion somewhere: any name in the request counts
                    break
                paths = {p.path: i for i, p in enumerate(parts)}
                for loc in finding.locations:
                    if loc.part in paths:
                        centres.append((paths[loc.part], loc.start, loc.end))
            else:
                ranges = self._windows(parts, centres)
        total = sum(end - start for _, start, end in ranges)
        if total > self.config.max_chars:
            raise PersonalUnavailable("over_budget")
        return ranges

    def _windows(
        self, parts: list[Part], centres: list[tuple[int, int, int]]
    ) -> list[tuple[int, int, int]]:
        window = self.config.combine.window_chars
        wanted: list[tuple[int, int]] = []
        for index, start, end in centres:
            base = parts[index].base
            wanted.append((base + start - window, base + end + window))
        wanted.sort()
        merged: list[list[int]] = []
        for lo, hi in wanted:
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        out = []
        bases = [p.base for p in parts]
        for lo, hi in merged:
            first = max(0, bisect.bisect_right(bases, lo) - 1)
            for index in range(first, len(parts)):
                part = parts[index]
                if part.base >= hi:
                    break
                start = max(0, lo - part.base)
                end = min(len(part.text), hi - part.base)
                if start < end:
                    # Widen to whole words so a name is not cut at the window's edge.
                    while start > 0 and not part.text[start - 1].isspace():
                        start -= 1
                    while end < len(part.text) and not part.text[end].isspace():
                        end += 1
                    out.append((index, start, end))
        return out

    def _ner_spans(self, parts: list[Part], ranges: list[tuple[int, int, int]]) -> list[_Span]:
        out: list[_Span] = []
        for index, start, end in ranges:
            text = parts[index].text
            for label, s, e in self.model.entities(text[start:end]):
                s, e = s + start, e + start
                if label in _PERSON_LABELS:
                    cleaned = clean_person(text, s, e)
                    if (
                        cleaned is not None
                        and not rules.organisation(text, cleaned[1])
                        and not rules.after_postcode(text, cleaned[0])
                    ):
                        out.append(_Span(rules.PERSON, index, *cleaned))
                elif label in _LOCATION_LABELS:
                    out.append(_Span(rules.LOCATION, index, s, e))
        return out

    # -- combination ------------------------------------------------------------------------

    def _findings(
        self, parts: list[Part], spans: list[_Span], prior: Sequence[Finding]
    ) -> tuple[Finding, ...]:
        window = self.config.combine.window_chars
        combined: set[int] = set()
        people = [
            (i, parts[s.part].base + s.start, parts[s.part].base + s.end)
            for i, s in enumerate(spans)
            if s.detector == rules.PERSON and not s.attribution
        ]
        companions: list[tuple[int, int, int]] = [
            (i, parts[s.part].base + s.start, parts[s.part].base + s.end)
            for i, s in enumerate(spans)
            if self.companion(s.detector)
        ]
        paths = {p.path: p for p in parts}
        anywhere = False
        for finding in prior:
            if not self.companion(finding.detector):
                continue
            if not finding.locations:
                anywhere = True
            for loc in finding.locations:
                part = paths.get(loc.part)
                if part is not None:
                    companions.append((-1, part.base + loc.start, part.base + loc.end))
        for person, p_start, p_end in people:
            for companion, c_start, c_end in companions:
                if c_start - p_end <= window and p_start - c_end <= window and person != companion:
                    combined.add(person)
                    if companion >= 0:
                        combined.add(companion)
            if anywhere:
                combined.add(person)
        by_detector: dict[str, list[int]] = {}
        for i, span in enumerate(spans):
            by_detector.setdefault(span.detector, []).append(i)
        findings = []
        for detector in sorted(by_detector):
            indexes = by_detector[detector]
            level = self.levels[detector]
            if any(i in combined for i in indexes):
                level = max(level, self.config.combine.level)
            locations = tuple(
                Location(parts[spans[i].part].path, spans[i].start, spans[i].end) for i in indexes
            )
            findings.append(Finding(detector, level, len(indexes), locations))
        return tuple(findings)


def clean_person(text: str, start: int, end: int) -> tuple[int, int] | None:
    """A model's PERSON span without leading role words and titles, trailing possessives and
    punctuation; None when what remains does not look like a name (code identifiers, one
    lower-case word, digits)."""
    value = text[start:end]
    words = value.split()
    while words and words[0].lower().rstrip(":,") in _LEADING:
        skip = value.index(words[0]) + len(words[0])
        start += skip
        value = value[skip:]
        words = words[1:]
    stripped = value.lstrip(" \t\n:,")
    start += len(value) - len(stripped)
    value = stripped
    for suffix in ("'s", "\u2019s"):
        if value.endswith(suffix):
            value = value[: -len(suffix)]
    value = value.rstrip(" \t\n.,;:!?'\"\u201d\u2019)")
    # A field label the model took into the name (`Kaitlyn Allen  DOB`, `... MRN`).
    words = value.split()
    while len(words) > 1 and words[-1].isupper() and len(words[-1]) <= 4:
        value = value[: value.rindex(words[-1])].rstrip()
        words = words[:-1]
    end = start + len(value)
    if len(value) < 3 or not value[0].isupper() or value.lower() in _NOT_NAMES:
        return None
    if any(ch.isdigit() or ch in "_()[]{}<>=@#/\\|*$" for ch in value):
        return None
    if "\n" in value:
        return None
    if len(value.split()) == 1 and (value.isupper() or any(c.isupper() for c in value[1:])):
        return None  # an acronym or a CamelCase identifier, not a name
    return start, end


def _merge(spans: list[_Span]) -> list[_Span]:
    """Overlapping spans of one detector in one field are one occurrence (their union)."""
    out: list[_Span] = []
    for span in sorted(spans, key=lambda s: (s.detector, s.part, s.start, -s.end)):
        last = out[-1] if out else None
        if (
            last is not None
            and last.detector == span.detector
            and last.part == span.part
            and span.start < last.end
        ):
            out[-1] = _Span(
                last.detector,
                last.part,
                last.start,
                max(last.end, span.end),
                last.attribution and span.attribution,
            )
        else:
            out.append(span)
    return out


def _inside(span: _Span, others: list[_Span]) -> bool:
    return any(o.part == span.part and o.start < span.end and span.start < o.end for o in others)
