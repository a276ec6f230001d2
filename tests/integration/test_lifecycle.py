"""The gateway as an operator runs it: `celgate serve` in its own process, SIGTERM draining."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2

from gateway.auth import hash_key
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.fakes._server import Reply
from tests.fakes.ollama_server import FakeOllama
from tests.harness import GatewayProcess, config_data, ollama_model

pytestmark = pytest.mark.integration


def test_sigterm_drains_an_in_flight_stream(tmp_path: Path) -> None:
    words = " ".join(f"w{i}" for i in range(12))
    with FakeOllama() as ollama:
        ollama.enqueue(Reply(content=words))
        ollama.set_latency(between_chunks=0.1)
        data = config_data({"local": ollama_model(ollama.url)}, "local")
        with GatewayProcess(data, tmp_path) as gateway:
            assert gateway.health() == health_pb2.HealthCheckResponse.SERVING
            first_chunk = threading.Event()
            received: list[str] = []
            with grpc.insecure_channel(gateway.address) as channel:
                stub = gateway_pb2_grpc.GatewayServiceStub(channel)
                request = pb.ChatStreamRequest(
                    messages=[pb.Message(role=pb.ROLE_USER, content="stream please")]
                )

                def consume() -> None:
                    for part in stub.ChatStream(request, timeout=30):
                        received.append(part.content_delta)
                        first_chunk.set()

                reader = threading.Thread(target=consume)
                reader.start()
                assert first_chunk.wait(10)
                gateway.terminate()
                reader.join(30)
            assert "".join(received) == words
            assert gateway.wait(30) == 0
            assert ollama.completed == 1
            assert "draining" in gateway.output()


def test_new_calls_are_refused_while_draining(tmp_path: Path) -> None:
    with FakeOllama() as ollama:
        ollama.set_latency(first_byte=1.5)
        data = config_data({"local": ollama_model(ollama.url)}, "local")
        with GatewayProcess(data, tmp_path) as gateway:
            with grpc.insecure_channel(gateway.address) as channel:
                stub = gateway_pb2_grpc.GatewayServiceStub(channel)
                request = pb.ChatRequest(messages=[pb.Message(role=pb.ROLE_USER, content="slow")])
                in_flight = stub.Chat.future(request, timeout=30)
                while ollama.request_count == 0:
                    threading.Event().wait(0.02)
                gateway.terminate()
                threading.Event().wait(0.3)
                with pytest.raises(grpc.RpcError) as refused:
                    stub.Chat(request, timeout=5)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                assert in_flight.result().content  # the in-flight call still completed
            assert gateway.wait(30) == 0


def test_sighup_reloads_keys_so_a_revoked_key_stops_working(tmp_path: Path) -> None:
    keep, revoke = "cg_keep_" + "k" * 30, "cg_revoke_" + "r" * 30
    with FakeOllama() as ollama:
        data = config_data(
            {"local": ollama_model(ollama.url)},
            "local",
            auth={
                "mode": "api_key",
                "api_keys": [
                    {"tenant": "team-a", "sha256": hash_key(keep)},
                    {"tenant": "team-b", "sha256": hash_key(revoke)},
                ],
            },
        )
        with GatewayProcess(data, tmp_path) as gateway:

            def tenant(key: str) -> str:
                with grpc.insecure_channel(gateway.address) as channel:
                    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
                    request = pb.RouteRequest(messages=[pb.Message(role=pb.ROLE_USER, content="x")])
                    metadata = (("authorization", f"Bearer {key}"),)
                    return str(stub.Route(request, metadata=metadata, timeout=5).context.tenant)

            assert tenant(revoke) == "team-b"
            # The operator removes the key from the file and signals the process.
            on_disk = yaml.safe_load(gateway.config_path.read_text())
            on_disk["auth"]["api_keys"] = on_disk["auth"]["api_keys"][:1]
            gateway.config_path.write_text(yaml.safe_dump(on_disk))
            assert gateway.proc is not None
            gateway.proc.send_signal(signal.SIGHUP)
            for _ in range(100):
                try:
                    tenant(revoke)
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
                    break
                threading.Event().wait(0.05)
            else:
                pytest.fail("the revoked key still works after SIGHUP")
            assert tenant(keep) == "team-a"
            assert "access settings reloaded" in gateway.output()
