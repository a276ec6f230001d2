"""Request inspection: data classification (detectors), task type, complexity, token estimate.

See docs/inspection.md for the detectors, their default levels and the evasions in scope.
"""

from gateway.inspect.classification import Finding
from gateway.inspect.inspector import Inspection, Inspector, effective_level

__all__ = ["Finding", "Inspection", "Inspector", "effective_level"]
