"""OpenTelemetry for celgate, one job per module (docs/architecture.md, "Telemetry"):

- `names`: every attribute and metric name;
- `export`: exporters and providers from the OTEL_* environment, counting lost telemetry;
- `instruments`: the metric instruments;
- `record`: one finished request's `Outcome` -> spans, metric points, decision-log line;
- `core`: `Telemetry`, which holds them together for one gateway.

With no exporter configured the tracer and meter are the API's no-op implementations: the
request path then pays for a few no-op calls, and nothing is exported or created.
"""

from gateway.telemetry.core import Telemetry
from gateway.telemetry.export import (
    CountingBatchSpanProcessor,
    CountingMetricExporter,
    DropCounter,
    resource,
)
from gateway.telemetry.names import *  # noqa: F403 (the names are this package's vocabulary)

__all__ = [
    "CountingBatchSpanProcessor",
    "CountingMetricExporter",
    "DropCounter",
    "Telemetry",
    "resource",
]
