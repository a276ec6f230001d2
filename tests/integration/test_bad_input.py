"""Bad input over a real gRPC channel: deeply nested JSON, bytes that are not UTF-8 and
malformed protobuf get INVALID_ARGUMENT with a BadRequest detail naming the field, and no
internal names (exception classes, parser messages) in what the caller sees."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2

from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from tests.fakes._server import refused_url
from tests.harness import make_config, ollama_model, serve, status_detail

pytestmark = pytest.mark.integration

INTERNAL_WORDS = ("Error", "Exception", "Traceback", "DecodeError", "RecursionError", "parsing")


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    with refused_url() as url:
        config = make_config({"local": ollama_model(url)}, "local")
        async with (
            serve(config) as (gateway, _),
            grpc.aio.insecure_channel(gateway.address) as chan,
        ):
            yield chan


def _assert_invalid(exc: grpc.aio.AioRpcError, field: str) -> None:
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
    details = exc.details() or ""
    for word in INTERNAL_WORDS:
        assert word not in details, details
    violation = status_detail(exc, error_details_pb2.BadRequest).field_violations[0]
    assert violation.field == field, violation
    assert details.startswith(field)


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _message(content: str = "hi") -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=content)


@pytest.mark.parametrize("depth", [100, 5000, 200_000])
async def test_deeply_nested_tool_schema(channel: grpc.aio.Channel, depth: int) -> None:
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    tool = pb.Tool(name="f", parameters_json=_nested(depth))
    for call in (stub.Route, stub.Chat):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call(pb.ChatRequest(messages=[_message()], tools=[tool]), timeout=10)
        _assert_invalid(exc.value, "tools[0].parameters_json")
        assert "nested" in (exc.value.details() or "")


async def test_deeply_nested_response_schema(channel: grpc.aio.Channel) -> None:
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    fmt = pb.ResponseFormat(
        type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema_name="s", json_schema=_nested(100_000)
    )
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.Route(pb.RouteRequest(messages=[_message()], response_format=fmt), timeout=10)
    _assert_invalid(exc.value, "response_format.json_schema")


def _raw(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
    # A generic call: the bytes go on the wire exactly as given.
    return channel.unary_unary(f"/gateway.v1.GatewayService/{method}")


async def test_string_field_with_bytes_that_are_not_utf8(channel: grpc.aio.Channel) -> None:
    good = pb.ChatRequest(messages=[_message("hi"), _message("ABCD")]).SerializeToString()
    bad = good.replace(b"ABCD", b"\xff\xfe\xc0\x80")
    for method in ("Chat", "Route"):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await _raw(channel, method)(bad, timeout=10)
        _assert_invalid(exc.value, "messages[1].content")
        assert "UTF-8" in (exc.value.details() or "")


async def test_non_utf8_label_is_named(channel: grpc.aio.Channel) -> None:
    good = pb.RouteRequest(messages=[_message()], labels={"team": "QQQQ"}).SerializeToString()
    bad = good.replace(b"QQQQ", b"\xff\xff\xff\xff")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await _raw(channel, "Route")(bad, timeout=10)
    _assert_invalid(exc.value, "labels[0].value")


@pytest.mark.parametrize(
    ("mangle", "field"),
    [
        (lambda b: b[:-3], "messages[1]"),  # truncated inside the second message
        (lambda b: b"\xff\xff", "(message)"),  # a tag that never ends
        (lambda b: b + b"\x0f", "messages[2]"),  # wire type 7 does not exist
    ],
)
async def test_malformed_protobuf(channel: grpc.aio.Channel, mangle: object, field: str) -> None:
    good = pb.ChatRequest(messages=[_message("hi"), _message("there")]).SerializeToString()
    assert callable(mangle)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await _raw(channel, "Chat")(mangle(good), timeout=10)
    _assert_invalid(exc.value, field)


async def test_malformed_stream_request(channel: grpc.aio.Channel) -> None:
    good = pb.ChatStreamRequest(messages=[_message("ABCD")]).SerializeToString()
    call = channel.unary_stream("/gateway.v1.GatewayService/ChatStream")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        async for _ in call(good.replace(b"ABCD", b"\xc3\x28AB"), timeout=10):
            pass
    _assert_invalid(exc.value, "messages[0].content")
