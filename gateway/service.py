"""GatewayService handlers: protos in, pipeline, protos out. The only place that maps the
pipeline's typed errors to gRPC status codes (DESIGN.md, "Errors at the edge")."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway import errors
from gateway.auth import Authenticator
from gateway.convert import (
    AnyChatRequest,
    GatewayRequest,
    chat_response_pb,
    stream_response_pb,
    to_gateway_request,
)
from gateway.pipeline import Pipeline, deadline_from
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc

log = logging.getLogger(__name__)

DOMAIN = "celgate"

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


def status_code(error: errors.GatewayError) -> grpc.StatusCode:
    if isinstance(error, errors.UpstreamRejected):
        return _UPSTREAM_STATUS.get(error.status, grpc.StatusCode.FAILED_PRECONDITION)
    for kind, code in _STATUS:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
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


async def _abort(context: grpc.aio.ServicerContext, error: errors.GatewayError) -> NoReturn:
    log.info("request failed: %s (%s)", error.reason, status_code(error).name)
    await context.abort_with_status(to_status(error))
    raise AssertionError("abort_with_status returns only by raising")  # pragma: no cover


class GatewayService(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, pipeline: Pipeline, authenticator: Authenticator) -> None:
        self.pipeline = pipeline
        self.authenticator = authenticator

    def _tenant(self, context: grpc.aio.ServicerContext) -> str:
        return self.authenticator.authenticate(
            context.invocation_metadata() or (), context.auth_context()
        )

    def _request(
        self, request: AnyChatRequest, context: grpc.aio.ServicerContext, *, streaming: bool
    ) -> GatewayRequest:
        tenant = self._tenant(context)
        return to_gateway_request(
            request, self.pipeline.config.limits, tenant=tenant, streaming=streaming
        )

    async def _guard(
        self, context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]
    ) -> T:
        try:
            return await call()
        except errors.GatewayError as error:
            await _abort(context, error)

    async def Chat(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChatResponse:
        async def run() -> pb.ChatResponse:
            req = self._request(request, context, streaming=False)
            deadline = deadline_from(
                context.time_remaining(), self.pipeline.config.server.default_deadline_s
            )
            result, route = await self.pipeline.chat(req, deadline)
            return chat_response_pb(result, route)

        return await self._guard(context, run)

    async def ChatStream(
        self, request: pb.ChatStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ChatStreamResponse]:
        try:
            req = self._request(request, context, streaming=True)
            deadline = deadline_from(
                context.time_remaining(), self.pipeline.config.server.default_deadline_s
            )
            async for chunk, route in self.pipeline.stream(req, deadline):
                yield stream_response_pb(chunk, route)
        except errors.GatewayError as error:
            await _abort(context, error)

    async def Route(
        self, request: pb.RouteRequest, context: grpc.aio.ServicerContext
    ) -> pb.RouteResponse:
        async def run() -> pb.RouteResponse:
            req = self._request(request, context, streaming=False)
            plan, route = await self.pipeline.route(req)
            candidates = [pb.Candidate(model=m, allowed=True) for m in plan.chain]
            candidates += [
                pb.Candidate(model=d.model, allowed=False, reason=d.reason) for d in plan.dropped
            ]
            findings = [
                pb.Finding(detector=f.detector, level=f.level.proto(), count=f.count)
                for f in plan.inspection.findings
            ]
            return pb.RouteResponse(
                route=route,
                decision=plan.decision,
                context=plan.context,
                findings=findings,
                candidates=candidates,
            )

        return await self._guard(context, run)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        async def run() -> pb.ListModelsResponse:
            self._tenant(context)
            return pb.ListModelsResponse(models=list(self.pipeline.model_infos().values()))

        return await self._guard(context, run)
