"""GatewayService handlers: protos in, pipeline, protos out. The only place that maps the
pipeline's typed errors to gRPC status codes (docs/architecture.md, "Errors at the edge").

Each RPC starts a `Call` (its decision id, start time and the caller's trace context), lets the
pipeline fill the request's `Progress`, and at the end hands the one `Outcome` to telemetry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import propagate

from gateway import errors
from gateway.auth import Authenticator
from gateway.chat import ChatRequest
from gateway.config import LimitsConfig
from gateway.convert import (
    AnyChatRequest,
    chat_response_pb,
    route_response_pb,
    stream_response_pb,
    to_chat_request,
)
from gateway.outcome import Call, Ending, Progress
from gateway.pipeline import Pipeline, deadline_from
from gateway.telemetry import Telemetry
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc
from gateway.wire import Malformed, SafeDeserializer

log = logging.getLogger(__name__)

# The gRPC service's full name (health, reflection and the SERVER spans use it).
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["GatewayService"].full_name
DOMAIN = "celgate"
# Response trailer with the decision id (also RouteInfo.decision_id), on success and failure:
# the key to the request's decision-log line.
DECISION_TRAILER = "celgate-decision-id"

_UPSTREAM_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
}

_STATUS: list[tuple[type[errors.GatewayError], grpc.StatusCode]] = [
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.BudgetExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.NoPolicy, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
]


# gRPC codes that mean the server failed (semantic conventions for RPC server spans); a refusal
# (PERMISSION_DENIED, RESOURCE_EXHAUSTED...) is the caller's problem and leaves the span status
# unset, visible through `error.type` and `rpc.grpc.status_code` instead.
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def status_code(error: errors.GatewayError) -> grpc.StatusCode:
    if isinstance(error, errors.UpstreamRejected):
        return _UPSTREAM_STATUS.get(error.status, grpc.StatusCode.FAILED_PRECONDITION)
    for kind, code in _STATUS:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: errors.GatewayError) -> grpc.Status:
    """The gRPC status for a pipeline error, with ErrorInfo and the detail its kind calls for."""
    code = status_code(error)
    details = [
        _pack(
            error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata)
        )
    ]
    if isinstance(error, errors.InvalidRequest):
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=error.message
        )
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    elif isinstance(error, errors.BudgetExhausted):
        quota = error_details_pb2.QuotaFailure.Violation(
            subject=error.subject, description=error.message
        )
        details.append(_pack(error_details_pb2.QuotaFailure(violations=[quota])))
    elif isinstance(error, errors.RateLimited):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_s * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=code.value[0], message=error.message, details=details)
    return rpc_status.to_status(status)


T = TypeVar("T")


def _outcome(exc: BaseException) -> grpc.StatusCode:
    """The status of an RPC that ended with something other than a GatewayError: a caller
    that went away, or a bug (grpc answers UNKNOWN)."""
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _carrier(context: grpc.aio.ServicerContext, fields: frozenset[str]) -> dict[str, str]:
    """The caller's trace-context headers, and nothing else of its metadata (which may hold an
    API key)."""
    return {
        key: value
        for key, value in context.invocation_metadata() or ()
        if isinstance(value, str) and key in fields
    }


class GatewayService(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self,
        pipeline: Pipeline,
        authenticator: Authenticator,
        telemetry: Telemetry,
        *,
        limits: LimitsConfig,
        default_deadline_s: float,
    ) -> None:
        self.pipeline = pipeline
        self.authenticator = authenticator
        self.telemetry = telemetry
        self.limits = limits
        self.default_deadline_s = default_deadline_s
        # The headers the configured propagators read (traceparent, tracestate, baggage).
        self._trace_fields = frozenset(propagate.get_global_textmap().fields)

    def _tenant(self, context: grpc.aio.ServicerContext) -> str:
        return self.authenticator.authenticate(
            context.invocation_metadata() or (), context.auth_context()
        )

    def _start(
        self, method: str, context: grpc.aio.ServicerContext, *, audited: bool = True
    ) -> Progress:
        call = Call.start(
            method,
            service=SERVICE_NAME,
            system="grpc",
            carrier=_carrier(context, self._trace_fields),
            audited=audited,
        )
        if audited:
            context.set_trailing_metadata(((DECISION_TRAILER, call.decision_id),))
        return Progress(call)

    def _finish(
        self, progress: Progress, code: grpc.StatusCode, error: BaseException | None = None
    ) -> None:
        """The RPC is over: its one outcome goes to telemetry and the decision log."""
        ending = Ending(code.name, code.value[0], code in _SERVER_FAULTS, error)
        self.telemetry.record(progress.outcome(ending))

    async def _abort(
        self, context: grpc.aio.ServicerContext, error: errors.GatewayError, progress: Progress
    ) -> NoReturn:
        code = status_code(error)
        log.info("request failed: %s (%s)", error.reason, code.name)
        self._finish(progress, code, error)
        status = to_status(error)
        # abort replaces trailers set earlier: the decision id goes with the status details.
        trailers = (*status.trailing_metadata, (DECISION_TRAILER, progress.call.decision_id))
        await context.abort(status.code, status.details, trailers)
        raise AssertionError("abort returns only by raising")  # pragma: no cover

    def _request(
        self,
        request: AnyChatRequest | Malformed,
        context: grpc.aio.ServicerContext,
        progress: Progress,
        *,
        streaming: bool,
    ) -> ChatRequest:
        progress.tenant = self._tenant(context)
        if isinstance(request, Malformed):
            # Bytes that are not the message (see `add_to_server`): named, never quoted.
            raise errors.InvalidRequest(request.field, request.problem)
        return to_chat_request(request, self.limits, tenant=progress.tenant, streaming=streaming)

    def _deadline(self, context: grpc.aio.ServicerContext) -> float:
        return deadline_from(context.time_remaining(), self.default_deadline_s)

    async def _guard(
        self,
        context: grpc.aio.ServicerContext,
        progress: Progress,
        call: Callable[[], Awaitable[T]],
    ) -> T:
        try:
            result = await call()
        except errors.GatewayError as error:
            await self._abort(context, error, progress)
        except BaseException as exc:
            self._finish(progress, _outcome(exc), exc)
            raise
        self._finish(progress, grpc.StatusCode.OK)
        return result

    async def Chat(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChatResponse:
        progress = self._start("Chat", context)

        async def run() -> pb.ChatResponse:
            req = self._request(request, context, progress, streaming=False)
            result, route = await self.pipeline.chat(req, self._deadline(context), progress)
            return chat_response_pb(result, route)

        return await self._guard(context, progress, run)

    async def ChatStream(
        self, request: pb.ChatStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ChatStreamResponse]:
        progress = self._start("ChatStream", context)
        try:
            req = self._request(request, context, progress, streaming=True)
            pieces = self.pipeline.stream(req, self._deadline(context), progress)
            # aclosing: the attempts are complete (the last one recorded) before the outcome.
            async with aclosing(pieces):
                async for chunk, route in pieces:
                    yield stream_response_pb(chunk, route)
        except errors.GatewayError as error:
            await self._abort(context, error, progress)
        except BaseException as exc:
            self._finish(progress, _outcome(exc), exc)
            raise
        # The SERVER span ends when the stream does.
        self._finish(progress, grpc.StatusCode.OK)

    async def Route(
        self, request: pb.RouteRequest, context: grpc.aio.ServicerContext
    ) -> pb.RouteResponse:
        progress = self._start("Route", context)

        async def run() -> pb.RouteResponse:
            req = self._request(request, context, progress, streaming=False)
            plan, route = await self.pipeline.route(req, progress)
            return route_response_pb(plan, route)

        return await self._guard(context, progress, run)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        progress = self._start("ListModels", context, audited=False)

        async def run() -> pb.ListModelsResponse:
            progress.tenant = self._tenant(context)
            return pb.ListModelsResponse(models=list(self.pipeline.model_infos().values()))

        return await self._guard(context, progress, run)


def add_to_server(service: GatewayService, server: grpc.aio.Server) -> None:
    """Register the service like the generated `add_GatewayServiceServicer_to_server`, with
    request deserializers that never raise: bytes that are not a valid request reach the
    handler as `Malformed` and get INVALID_ARGUMENT naming the field, where gRPC's own
    deserialization failure would answer with an internal error."""
    handlers = {
        "Chat": grpc.unary_unary_rpc_method_handler(
            service.Chat,
            request_deserializer=SafeDeserializer(pb.ChatRequest),
            response_serializer=pb.ChatResponse.SerializeToString,
        ),
        "ChatStream": grpc.unary_stream_rpc_method_handler(
            service.ChatStream,
            request_deserializer=SafeDeserializer(pb.ChatStreamRequest),
            response_serializer=pb.ChatStreamResponse.SerializeToString,
        ),
        "Route": grpc.unary_unary_rpc_method_handler(
            service.Route,
            request_deserializer=SafeDeserializer(pb.RouteRequest),
            response_serializer=pb.RouteResponse.SerializeToString,
        ),
        "ListModels": grpc.unary_unary_rpc_method_handler(
            service.ListModels,
            request_deserializer=SafeDeserializer(pb.ListModelsRequest),
            response_serializer=pb.ListModelsResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
