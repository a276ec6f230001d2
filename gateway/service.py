"""GatewayService handlers: protos in, pipeline, protos out. The only place that maps the
pipeline's typed errors to gRPC status codes (DESIGN.md, "Errors at the edge")."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
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
from gateway.telemetry import Observation, Telemetry
from gateway.v1 import gateway_pb2 as pb
from gateway.v1 import gateway_pb2_grpc

log = logging.getLogger(__name__)

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


async def _abort(
    context: grpc.aio.ServicerContext, error: errors.GatewayError, observation: Observation
) -> NoReturn:
    code = status_code(error)
    log.info("request failed: %s (%s)", error.reason, code.name)
    observation.finish(code, error)
    status = to_status(error)
    # abort replaces trailers set earlier: the decision id goes with the status details.
    trailers = (*status.trailing_metadata, (DECISION_TRAILER, observation.decision_id))
    await context.abort(status.code, status.details, trailers)
    raise AssertionError("abort returns only by raising")  # pragma: no cover


def _outcome(exc: BaseException) -> grpc.StatusCode:
    """The status of an RPC that ended with something other than a GatewayError: a caller
    that went away, or a bug (grpc answers UNKNOWN)."""
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class GatewayService(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self, pipeline: Pipeline, authenticator: Authenticator, telemetry: Telemetry
    ) -> None:
        self.pipeline = pipeline
        self.authenticator = authenticator
        self.telemetry = telemetry

    def _tenant(self, context: grpc.aio.ServicerContext) -> str:
        return self.authenticator.authenticate(
            context.invocation_metadata() or (), context.auth_context()
        )

    def _observe(
        self, method: str, context: grpc.aio.ServicerContext, *, audited: bool = True
    ) -> Observation:
        observation = self.telemetry.observe(
            method, context.invocation_metadata() or (), audited=audited
        )
        if audited:
            context.set_trailing_metadata(((DECISION_TRAILER, observation.decision_id),))
        return observation

    def _request(
        self,
        request: AnyChatRequest,
        context: grpc.aio.ServicerContext,
        observation: Observation,
        *,
        streaming: bool,
    ) -> GatewayRequest:
        tenant = self._tenant(context)
        observation.authenticated(tenant)
        return to_gateway_request(
            request, self.pipeline.config.limits, tenant=tenant, streaming=streaming
        )

    async def _guard(
        self,
        context: grpc.aio.ServicerContext,
        observation: Observation,
        call: Callable[[], Awaitable[T]],
    ) -> T:
        try:
            result = await call()
        except errors.GatewayError as error:
            await _abort(context, error, observation)
        except BaseException as exc:
            observation.finish(_outcome(exc), exc)
            raise
        observation.finish(grpc.StatusCode.OK)
        return result

    async def Chat(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChatResponse:
        observation = self._observe("Chat", context)

        async def run() -> pb.ChatResponse:
            req = self._request(request, context, observation, streaming=False)
            deadline = deadline_from(
                context.time_remaining(), self.pipeline.config.server.default_deadline_s
            )
            result, route = await self.pipeline.chat(req, deadline, observation)
            return chat_response_pb(result, route)

        return await self._guard(context, observation, run)

    async def ChatStream(
        self, request: pb.ChatStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ChatStreamResponse]:
        observation = self._observe("ChatStream", context)
        try:
            req = self._request(request, context, observation, streaming=True)
            deadline = deadline_from(
                context.time_remaining(), self.pipeline.config.server.default_deadline_s
            )
            async for chunk, route in self.pipeline.stream(req, deadline, observation):
                yield stream_response_pb(chunk, route)
        except errors.GatewayError as error:
            await _abort(context, error, observation)
        except BaseException as exc:
            observation.finish(_outcome(exc), exc)
            raise
        # The SERVER span ends when the stream does.
        observation.finish(grpc.StatusCode.OK)

    async def Route(
        self, request: pb.RouteRequest, context: grpc.aio.ServicerContext
    ) -> pb.RouteResponse:
        observation = self._observe("Route", context)

        async def run() -> pb.RouteResponse:
            req = self._request(request, context, observation, streaming=False)
            plan, route = await self.pipeline.route(req, observation)
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

        return await self._guard(context, observation, run)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        observation = self._observe("ListModels", context, audited=False)

        async def run() -> pb.ListModelsResponse:
            observation.authenticated(self._tenant(context))
            return pb.ListModelsResponse(models=list(self.pipeline.model_infos().values()))

        return await self._guard(context, observation, run)
