"""Request inspection: data classification (detectors), task type, complexity, token estimate.

See docs/inspection.md for what is scanned, the detectors, their default levels and the
evasions in scope.
"""

from gateway.inspect.findings import Finding, Location
from gateway.inspect.inspector import Inspection, Inspector, effective_level
from gateway.inspect.parts import part_text, request_parts

__all__ = [
    "Finding",
    "Inspection",
    "Inspector",
    "Location",
    "effective_level",
    "part_text",
    "request_parts",
]
