"""GET /metrics: the gateway's metrics in the Prometheus text format, through the OpenTelemetry
Prometheus exporter, on a plaintext HTTP listener of its own (`telemetry.prometheus.listen`),
never on the gRPC port. A cluster without an OpenTelemetry collector scrapes it directly.

The exporter translates names the usual way: dots become underscores, the unit is appended
(`s` -> `_seconds`, `USD` -> `_USD`, annotations such as `{token}` are dropped) and counters
get `_total`; so `celgate.cost` is `celgate_cost_USD_total` and `gen_ai.client.operation.duration`
is `gen_ai_client_operation_duration_seconds`. Each gateway has its own registry, so several
gateways in one process (the tests) keep their metrics apart.

The listener serves the registry from a thread of its own: a slow scraper never holds the event
loop. Only metrics are served there: nothing that could carry content.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from gateway.config import ConfigError

log = logging.getLogger(__name__)

PATH = "/metrics"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        if self.path.split("?", 1)[0] != PATH:
            self.send_error(404, f"only {PATH} is served here")
            return
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        payload = encoder(self.server.registry)
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # One line per scrape would drown the gateway's log.
        return


class MetricsEndpoint:
    """The Prometheus reader (add `reader` to the MeterProvider) and the HTTP listener."""

    def __init__(self, listen: str) -> None:
        self.listen = listen
        self.registry = CollectorRegistry(auto_describe=True)
        self.reader = PrometheusMetricReader(registry=self.registry)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> int:
        """Bind and serve; returns the bound port. Raises ConfigError naming the setting
        when the address cannot be bound."""
        host, _, port = self.listen.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Server(_Server):
            address_family = family

        try:
            server = Server((host, int(port)), _Handler)
        except OSError as exc:
            raise ConfigError(
                f"telemetry.prometheus.listen: cannot listen on {self.listen}: {exc.strerror}"
            ) from None
        server.registry = self.registry
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, name="celgate-metrics", daemon=True
        )
        self._thread.start()
        log.info("serving Prometheus metrics on %s:%d%s", host, self.port, PATH)
        return self.port

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
