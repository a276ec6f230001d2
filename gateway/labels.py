"""Request labels promoted to telemetry: which of a caller's labels reach the cost and token
metrics, the spans and the decision log, and with which value.

Callers may send any labels; only the keys the operator lists (`telemetry.labels.promote`) are
carried, so an unlisted key never creates a metric series. Each key keeps at most `max_values`
distinct values (per process): the first ones seen are kept, every later value is counted as
`other`, so a caller cannot multiply the series count. A value is carried only when it looks
like an identifier (letters, digits, `_ . : / + -`, at most 64 characters) and the content
detectors find nothing in it; anything else is `other` too, because a label is caller input
and a value the gateway would not let through in a message must not get out through a metric
label either.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Config, InspectionConfig

# The value that stands for every value not carried as itself.
OTHER = "other"

_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/+-]{0,63}")

# True when a value may be carried (the content detectors found nothing in it).
Screen = Callable[[str], bool]


class LabelPromoter:
    """Maps a request's labels to the promoted ones. Thread-safe; remembers every value it has
    decided on (at most `max_values` kept plus a bounded cache of refused ones), so a value is
    screened once."""

    def __init__(self, keys: Iterable[str], max_values: int, screen: Screen | None = None) -> None:
        self.keys = tuple(keys)
        self.max_values = max_values
        self._screen = screen
        self._lock = threading.Lock()
        self._kept: dict[str, set[str]] = {key: set() for key in self.keys}
        # Values refused for their shape or content, per key; bounded like the kept ones so a
        # caller cycling through values cannot grow memory.
        self._refused: dict[str, set[str]] = {key: set() for key in self.keys}

    def promote(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The promoted keys present in `labels`, each with its value or `other`."""
        if not self.keys or not labels:
            return {}
        out: dict[str, str] = {}
        for key in self.keys:
            value = labels.get(key)
            if value is not None:
                out[key] = self._value(key, value)
        return out

    def _value(self, key: str, value: str) -> str:
        kept = self._kept[key]
        if value in kept:  # the common case: no lock needed to read a set that only grows
            return value
        with self._lock:
            if value in kept:
                return value
            if value in self._refused[key]:
                return OTHER
            if len(kept) >= self.max_values:
                return OTHER
            if not _SHAPE.fullmatch(value) or not self._screened(value):
                refused = self._refused[key]
                if len(refused) < 4 * self.max_values:
                    refused.add(value)
                return OTHER
            kept.add(value)
            return value

    def _screened(self, value: str) -> bool:
        if self._screen is None:
            return True
        try:
            return self._screen(value)
        except Exception:
            # A detector that fails must neither let the value through nor fail the request
            # over a telemetry label: the value is reported as `other`.
            return False


def content_screen(inspection: InspectionConfig) -> Screen:
    """A screen that refuses any value in which the pattern-tier detectors (the operator's
    patterns and dictionaries included) find something."""
    from gateway.inspect import normalize
    from gateway.inspect.classification import Classifier

    classifier = Classifier(inspection)

    def screen(value: str) -> bool:
        return not classifier.scan(normalize.to_bytes(value))

    return screen


def promoter_for(config: Config) -> LabelPromoter:
    labels = config.telemetry.labels
    screen = content_screen(config.inspection) if labels.promote else None
    return LabelPromoter(labels.promote, labels.max_values, screen)
