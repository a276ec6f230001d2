"""Redact and restore: placeholders out, values back (streams included).

A redaction replaces the located values of some findings by typed, numbered placeholders
(`<EMAIL_1>`, `<PERSON_2>`). The same value always gets the same placeholder within the request,
wherever it sits (messages, tool-call arguments, tool results); a placeholder never collides with
text already in the request. The mapping lives only in the `Redaction` object of one request and
is dropped with it: it is never logged, exported or returned.

Restoring puts the values back into what the model answered: content (whole, or streamed in
chunks that may split a placeholder anywhere) and tool-call arguments (which stay valid JSON). A
placeholder-looking token the mapping does not know (invented or mangled by the model) is left
as it is and counted.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.chat import ChatParams
from gateway.inspect.findings import Finding
from gateway.inspect.parts import request_parts

# Anything shaped like one of our placeholders; those not in the mapping are counted.
_PLACEHOLDER_SHAPE = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")


def placeholder_type(detector: str) -> str:
    """`pii.email` -> `EMAIL`, `pii.date_of_birth` -> `DATE_OF_BIRTH`."""
    name = detector.rsplit(".", 1)[-1]
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper() or "VALUE"


@dataclass(frozen=True, slots=True)
class Redaction:
    """One request's redaction. `mapping` (placeholder -> value) never leaves the process."""

    params: ChatParams
    mapping: Mapping[str, str] = field(repr=False)
    counts: Mapping[str, int]  # detector id -> values replaced (what may be shown)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(slots=True)
class _Span:
    start: int
    end: int
    detector: str


def redact(params: ChatParams, findings: Iterable[Finding]) -> Redaction:
    """Replace every located value of `findings` by its placeholder.

    Raises `ValueError` when a finding has no location (nothing to replace: the caller must
    not send the request redacted) or a location that does not fit its part.
    """
    texts = dict(request_parts(params))
    spans: dict[str, list[_Span]] = {}
    for finding in findings:
        if not finding.locations:
            raise ValueError(f"finding {finding.detector} carries no location")
        for loc in finding.locations:
            text = texts.get(loc.part)
            if text is None or not 0 <= loc.start < loc.end <= len(text):
                raise ValueError(f"finding {finding.detector} points outside the request")
            spans.setdefault(loc.part, []).append(_Span(loc.start, loc.end, finding.detector))

    _every_occurrence(texts, spans)
    allocator = _Allocator(texts.values())
    edits: dict[str, str] = {}
    counts: dict[str, int] = {}
    for part, part_spans in spans.items():
        text = texts[part]
        pieces: list[str] = []
        cursor = 0
        for span in _merge(part_spans):
            placeholder, new = allocator.placeholder(
                span.detector, _value(text[span.start : span.end])
            )
            if new:
                counts[span.detector] = counts.get(span.detector, 0) + 1
            pieces.append(text[cursor : span.start])
            pieces.append(placeholder)
            cursor = span.end
        pieces.append(text[cursor:])
        edits[part] = "".join(pieces)
    return Redaction(replace_parts(params, edits), allocator.mapping, counts)


def _every_occurrence(texts: Mapping[str, str], spans: dict[str, list[_Span]]) -> None:
    """Add a span for every other occurrence of a located value, in any part: a value the
    inspector rated lower elsewhere (an address as an attribution in a tool result) or did not
    flag there at all must not go out verbatim beside its placeholder. JSON-escaped forms (in
    tool arguments and JSON tool results) are found too."""
    values: dict[str, str] = {}
    for part, part_spans in spans.items():
        text = texts[part]
        for span in part_spans:
            value = _value(text[span.start : span.end])
            values.setdefault(value, span.detector)
    if not values:
        return
    forms: dict[str, str] = {}
    for value, detector in values.items():
        for form in {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}:
            if form:
                forms.setdefault(form, detector)
    for part, text in texts.items():
        for form, detector in forms.items():
            at = text.find(form)
            while at != -1:
                spans.setdefault(part, []).append(_Span(at, at + len(form), detector))
                at = text.find(form, at + len(form))


def _merge(spans: list[_Span]) -> list[_Span]:
    """Overlapping spans become one (the wider value wins the type), so nothing is left half
    replaced."""
    merged: list[_Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if merged and span.start < merged[-1].end:
            last = merged[-1]
            last.end = max(last.end, span.end)
        else:
            merged.append(_Span(span.start, span.end, span.detector))
    return merged


def _value(raw: str) -> str:
    """The value as the caller meant it: a slice of JSON text (tool arguments, tool results)
    may hold escapes (`Jos\\u00e9`), which stand for the same value as the plain text."""
    if "\\" in raw:
        try:
            decoded = json.loads(f'"{raw}"')
        except ValueError:
            return raw
        if isinstance(decoded, str):
            return decoded
    return raw


class _Allocator:
    """Numbers placeholders per type, skipping any that already occur in the request."""

    def __init__(self, texts: Iterable[str]) -> None:
        self._taken = set()
        for text in texts:
            self._taken.update(_PLACEHOLDER_SHAPE.findall(text))
        self._by_value: dict[tuple[str, str], str] = {}
        self._next: dict[str, int] = {}
        self.mapping: dict[str, str] = {}

    def placeholder(self, detector: str, value: str) -> tuple[str, bool]:
        kind = placeholder_type(detector)
        known = self._by_value.get((kind, value))
        if known is not None:
            return known, False
        number = self._next.get(kind, 1)
        while f"<{kind}_{number}>" in self._taken:
            number += 1
        self._next[kind] = number + 1
        placeholder = f"<{kind}_{number}>"
        self._by_value[(kind, value)] = placeholder
        self.mapping[placeholder] = value
        return placeholder, True


# -- rebuilding the request ---------------------------------------------------------------------


def replace_parts(params: ChatParams, edits: Mapping[str, str]) -> ChatParams:
    """`params` with the strings at the given paths (as `request_parts` names them) replaced.
    Raises `KeyError` for a path that names no string of the request."""
    remaining = dict(edits)
    result = _rebuild(params, "", remaining)
    if remaining:
        raise KeyError(next(iter(remaining)))
    assert isinstance(result, ChatParams)
    return result


def _rebuild(value: Any, path: str, edits: dict[str, str]) -> Any:
    if isinstance(value, str):
        return edits.pop(path, value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        prefix = f"{path}." if path else ""
        changes = {}
        for f in dataclasses.fields(value):
            old = getattr(value, f.name)
            new = _rebuild(old, prefix + f.name, edits)
            if new is not old:
                changes[f.name] = new
        return dataclasses.replace(value, **changes) if changes else value
    if isinstance(value, tuple | list):
        items = [_rebuild(item, f"{path}[{i}]", edits) for i, item in enumerate(value)]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return type(value)(items)
    if isinstance(value, dict):
        rebuilt: dict[Any, Any] = {}
        for key, item in value.items():
            quoted = json.dumps(key, ensure_ascii=False)
            new_key = edits.pop(f"{path}{{{quoted}}}", key) if key else key
            rebuilt[new_key] = _rebuild(item, f"{path}[{quoted}]", edits)
        return rebuilt
    return value


# -- restoring the answer -----------------------------------------------------------------------


class Restorer:
    """Puts a redaction's values back into an answer. `unknown` counts placeholder-shaped
    tokens that were left alone because the mapping does not hold them."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self._mapping = dict(mapping)
        self.unknown = 0
        self._longest = max((len(p) for p in self._mapping), default=0)

    def text(self, text: str) -> str:
        if "<" not in text:
            return text
        return _PLACEHOLDER_SHAPE.sub(lambda m: self._swap(m.group(0), json_escape=False), text)

    def arguments(self, arguments: str) -> str:
        """Tool-call arguments (JSON text): values go back JSON-escaped, so the result parses
        whenever the model's arguments did."""
        if "<" not in arguments:
            return arguments
        return _PLACEHOLDER_SHAPE.sub(lambda m: self._swap(m.group(0), json_escape=True), arguments)

    def _swap(self, token: str, *, json_escape: bool) -> str:
        value = self._mapping.get(token)
        if value is None:
            self.unknown += 1
            return token
        return json.dumps(value, ensure_ascii=False)[1:-1] if json_escape else value

    def stream(self) -> StreamRestorer:
        return StreamRestorer(self)

    def held_prefix(self, text: str) -> int:
        """Length of the longest suffix of `text` that could still grow into a placeholder
        (a proper prefix of one, or of the placeholder shape for counting)."""
        start = max(0, len(text) - max(self._longest, 1) + 1)
        at = text.find("<", start)
        while at != -1:
            tail = text[at:]
            if any(p.startswith(tail) and p != tail for p in self._mapping):
                return len(tail)
            at = text.find("<", at + 1)
        return 0


class StreamRestorer:
    """Restores a streamed text one delta at a time, holding back only a possible placeholder
    prefix at the end of what has arrived, never more."""

    def __init__(self, restorer: Restorer) -> None:
        self._restorer = restorer
        self._held = ""

    def feed(self, delta: str) -> str:
        text = self._held + delta
        if "<" not in text:
            self._held = ""
            return text
        keep = self._restorer.held_prefix(text)
        ready, self._held = (text[:-keep], text[-keep:]) if keep else (text, "")
        return self._restorer.text(ready)

    def finish(self) -> str:
        """What is still held when the stream ends (it never became a placeholder)."""
        rest, self._held = self._held, ""
        return self._restorer.text(rest)
