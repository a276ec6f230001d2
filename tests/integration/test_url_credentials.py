"""Proxy credentials in a model's base URL (`http://user:pass@host`) never reach the log of a
running `celgate serve` (its own lines, the HTTP client's request lines, failures), the
errors callers get, or `celgate models`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.audit import DecisionLog
from gateway.scrub import scrub_text, scrub_url
from gateway.server import running
from gateway.telemetry import Telemetry
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.fakes._server import refused_url
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import ROOT, GatewayProcess, config_data, make_config, openai_model

pytestmark = pytest.mark.integration

PASSWORD = "pr0xy-s3cret-pw"


def with_credentials(url: str) -> str:
    return url.replace("://", f"://proxyuser:{PASSWORD}@", 1)


def test_proxy_password_stays_out_of_logs_errors_and_model_listing(tmp_path: Path) -> None:
    with FakeOpenAI() as fake, refused_url("/v1") as dead:
        models = {
            "cloud": openai_model(with_credentials(fake.url)),
            "dead": openai_model(with_credentials(dead)),
        }
        data = config_data(models, "cloud", dispatch={"max_attempts": 1})
        with GatewayProcess(data, tmp_path, env={"CELGATE_LOG_LEVEL": "DEBUG"}) as gateway:
            with grpc.insecure_channel(gateway.address) as channel:
                stub = gateway_pb2_grpc.GatewayServiceStub(channel)
                message = [pb.Message(role=pb.ROLE_USER, content="hello")]
                answer = stub.Chat(
                    pb.ChatRequest(messages=message, preferred_model="cloud"), timeout=10
                )
                assert answer.content
                with pytest.raises(grpc.RpcError) as failed:
                    stub.Chat(pb.ChatRequest(messages=message, preferred_model="dead"), timeout=10)
            output = gateway.output()
        listing = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "models", "--config", str(gateway.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
    assert fake.request_count == 1
    # The HTTP client logged its request lines, with the URL, but without the password.
    assert "HTTP Request: POST http://***@127.0.0.1" in output
    assert PASSWORD not in output
    assert "proxyuser" not in output
    assert PASSWORD not in (failed.value.details() or "")
    assert listing.returncode == 0, listing.stderr
    assert "http://***@127.0.0.1" in listing.stdout
    assert PASSWORD not in listing.stdout + listing.stderr
    assert yaml.safe_load(gateway.config_path.read_text())  # the config itself is unchanged


async def test_proxy_password_stays_out_of_spans_and_the_decision_log(tmp_path: Path) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    log_path = tmp_path / "decisions.jsonl"
    with FakeOpenAI() as fake, refused_url("/v1") as dead:
        models = {
            "cloud": openai_model(with_credentials(fake.url)),
            "dead": openai_model(with_credentials(dead)),
        }
        config = make_config(models, "cloud", dispatch={"max_attempts": 1})
        telemetry = Telemetry(
            config.models,
            tracer_provider=tracer_provider,
            meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
            decision_log=DecisionLog.open(str(log_path)),
        )
        async with (
            running(config, telemetry) as gateway,
            grpc.aio.insecure_channel(gateway.address) as channel,
        ):
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            message = [pb.Message(role=pb.ROLE_USER, content="hello")]
            await stub.Chat(pb.ChatRequest(messages=message, preferred_model="cloud"), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.Chat(
                    pb.ChatRequest(messages=message, preferred_model="dead"), timeout=10
                )
    assert PASSWORD not in (failed.value.details() or "")
    clients = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert len(clients) == 2
    for span in spans.get_finished_spans():
        attributes = dict(span.attributes or {})
        assert PASSWORD not in repr(attributes) + repr(span.events) + span.name
        if span.kind == SpanKind.CLIENT:
            assert attributes["server.address"] == "127.0.0.1"
    text = log_path.read_text()
    assert text and PASSWORD not in text and "proxyuser" not in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("POST http://u:p@h:1/v1 ok", "POST http://***@h:1/v1 ok"),
        ("redis://:pw@redis:6379/0", "redis://***@redis:6379/0"),
        (
            "a https://user@x.example/p and http://k:v@y/q",
            "a https://***@x.example/p and http://***@y/q",
        ),
        ("no url, an e-mail a@b.example", "no url, an e-mail a@b.example"),
        ("http://host/path?q=a@b", "http://host/path?q=a@b"),
    ],
)
def test_scrub_text(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


def test_scrub_url_keeps_host_port_and_path() -> None:
    assert scrub_url("http://u:p@proxy:3128/v1") == "http://***@proxy:3128/v1"
    assert scrub_url("https://api.example/v1") == "https://api.example/v1"
