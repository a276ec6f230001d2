"""`Client` (blocking) and `AsyncClient` (asyncio) over one gRPC channel each."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Unpack

import grpc

from celgate_client._requests import Messages, Options, build
from celgate_client.errors import from_aio_error, from_sync_error
from celgate_client.v1 import gateway_pb2 as pb
from celgate_client.v1 import gateway_pb2_grpc, policy_pb2


@dataclass(frozen=True)
class TLS:
    """TLS settings: a private CA (`ca_file`), a client certificate for mutual TLS
    (`cert_file` and `key_file`), and the name to verify when it differs from the target's
    host (`server_name`). Unset fields fall back to the system's roots and no client cert."""

    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("TLS: cert_file and key_file go together")

        def read(path: str | Path | None) -> bytes | None:
            return Path(path).read_bytes() if path is not None else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


def _channel_args(tls: bool | TLS) -> tuple[grpc.ChannelCredentials | None, list[Any]]:
    if tls is False:
        return None, []
    settings = tls if isinstance(tls, TLS) else TLS()
    options: list[Any] = []
    if settings.server_name:
        options.append(("grpc.ssl_target_name_override", settings.server_name))
    return settings.credentials(), options


def _metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


class Client:
    """A blocking client. Use as a context manager, or call `close()`.

    `target` is `host:port`; `api_key` is sent as `authorization: Bearer <key>`; `tls` is
    False (plaintext), True (system roots) or a `TLS`.
    """

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        tls: bool | TLS = False,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        credentials, channel_options = _channel_args(tls)
        channel_options += list(options)
        self._channel = (
            grpc.insecure_channel(target, options=channel_options)
            if credentials is None
            else grpc.secure_channel(target, credentials, options=channel_options)
        )
        self._stub: Any = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self._metadata = _metadata(api_key)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_sync_error(error) from None

    def chat(
        self,
        messages: Messages | pb.ChatRequest,
        *,
        timeout: float | None = None,
        **options: Unpack[Options],
    ) -> pb.ChatResponse:
        """One completion: content, tool calls, usage and the route (model, rule, cost)."""
        request = build(pb.ChatRequest, messages, options)
        response: pb.ChatResponse = self._call(self._stub.Chat, request, timeout)
        return response

    def chat_stream(
        self,
        messages: Messages | pb.ChatStreamRequest,
        *,
        timeout: float | None = None,
        **options: Unpack[Options],
    ) -> Iterator[pb.ChatStreamResponse]:
        """Content deltas as they come; the last part has finish reason, usage and route."""
        request = build(pb.ChatStreamRequest, messages, options)
        call = self._call(self._stub.ChatStream, request, timeout)
        try:
            yield from call
        except grpc.RpcError as error:
            raise from_sync_error(error) from None
        finally:
            call.cancel()  # no-op once complete; stops the RPC if the caller breaks out

    def route(
        self,
        messages: Messages | pb.RouteRequest,
        *,
        timeout: float | None = None,
        **options: Unpack[Options],
    ) -> pb.RouteResponse:
        """The routing decision and why, without calling a model or spending anything."""
        request = build(pb.RouteRequest, messages, options)
        response: pb.RouteResponse = self._call(self._stub.Route, request, timeout)
        return response

    def list_models(self, *, timeout: float | None = None) -> list[policy_pb2.ModelInfo]:
        """The catalogue: location, clearance, prices and current health of each model."""
        response: pb.ListModelsResponse = self._call(
            self._stub.ListModels, pb.ListModelsRequest(), timeout
        )
        return list(response.models)


class AsyncClient:
    """The asyncio client: the same methods as `Client`, as coroutines. Use as an async
    context manager, or await `close()`."""

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        tls: bool | TLS = False,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        credentials, channel_options = _channel_args(tls)
        channel_options += list(options)
        self._channel = (
            grpc.aio.insecure_channel(target, options=channel_options)
            if credentials is None
            else grpc.aio.secure_channel(target, credentials, options=channel_options)
        )
        self._stub: Any = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self._metadata = _metadata(api_key)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise from_aio_error(error) from None

    async def chat(
        self,
        messages: Messages | pb.ChatRequest,
        *,
        timeout: float | None = None,
        **options: Unpack[Options],
    ) -> pb.ChatResponse:
        request = build(pb.ChatRequest, messages, options)
        response: pb.ChatResponse = await self._call(self._stub.Chat, request, timeout)
        return response

    async def chat_stream(
        self,
        messages: Messages | pb.ChatStreamRequest,
        *,
        timeout: float | None = None,
        **options: Unpack[Options],
    ) -> AsyncIterator[pb.ChatStreamResponse]:
        request = build(pb.ChatStreamRequest, messages, options)
        call = self._stub.ChatStream(request, timeout=timeout, metadata=self._metadata)
        try:
            async for part in call:
                yield part
        except grpc.aio.AioRpcError as error:
            raise from_aio_error(error) from None
        finally:
            call.cancel()

    async def route(
        self,
        messages: Messages | pb.RouteRequest,
        *,
        timeout: float | None = None,
        **options: Unpack[Options],
    ) -> pb.RouteResponse:
        request = build(pb.RouteRequest, messages, options)
        response: pb.RouteResponse = await self._call(self._stub.Route, request, timeout)
        return response

    async def list_models(self, *, timeout: float | None = None) -> list[policy_pb2.ModelInfo]:
        response: pb.ListModelsResponse = await self._call(
            self._stub.ListModels, pb.ListModelsRequest(), timeout
        )
        return list(response.models)
