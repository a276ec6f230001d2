"""The /metrics listener: the OpenTelemetry Prometheus reader behind a plaintext HTTP server of its
own, over a real socket."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider

from gateway.config import ConfigError
from gateway.telemetry.prometheus import MetricsEndpoint


@pytest.fixture
def endpoint() -> Iterator[tuple[MetricsEndpoint, MeterProvider]]:
    served = MetricsEndpoint("127.0.0.1:0")
    served.start()
    provider = MeterProvider(metric_readers=[served.reader])
    yield served, provider
    served.stop()
    provider.shutdown()


def get(url: str, **headers: str) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def test_serves_the_prometheus_text_format(endpoint: tuple[MetricsEndpoint, MeterProvider]) -> None:
    served, provider = endpoint
    meter = provider.get_meter("celgate")
    meter.create_counter("celgate.cost", unit="USD").add(0.25, {"celgate.tenant": "acme"})
    status, content_type, body = get(f"http://127.0.0.1:{served.port}/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    assert 'celgate_cost_USD_total{celgate_tenant="acme"' in body
    # OpenMetrics when the scraper asks for it.
    _, content_type, body = get(
        f"http://127.0.0.1:{served.port}/metrics", Accept="application/openmetrics-text"
    )
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")


def test_only_metrics_are_served(endpoint: tuple[MetricsEndpoint, MeterProvider]) -> None:
    served, _ = endpoint
    for path in ("/", "/metrics/../admin", "/debug"):
        with pytest.raises(urllib.error.HTTPError) as missing:
            get(f"http://127.0.0.1:{served.port}{path}")
        assert missing.value.code == 404


def test_gateways_in_one_process_keep_their_metrics_apart() -> None:
    first, second = MetricsEndpoint("127.0.0.1:0"), MetricsEndpoint("127.0.0.1:0")
    providers = [MeterProvider(metric_readers=[e.reader]) for e in (first, second)]
    try:
        for served in (first, second):
            served.start()
        providers[0].get_meter("celgate").create_counter("only.first").add(1)
        _, _, body = get(f"http://127.0.0.1:{second.port}/metrics")
        assert "only_first" not in body
        _, _, body = get(f"http://127.0.0.1:{first.port}/metrics")
        assert "only_first_total" in body
    finally:
        for served in (first, second):
            served.stop()
        for provider in providers:
            provider.shutdown()


def test_an_address_in_use_is_a_config_error_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        served = MetricsEndpoint(f"127.0.0.1:{port}")
        with pytest.raises(
            ConfigError, match=rf"telemetry.prometheus.listen: cannot listen on 127.0.0.1:{port}"
        ):
            served.start()


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    served = MetricsEndpoint("[::1]:0")
    try:
        try:
            served.start()
        except ConfigError:
            pytest.skip("IPv6 loopback not configured")
        status, _, _ = get(f"http://[::1]:{served.port}/metrics")
        assert status == 200
    finally:
        served.stop()
