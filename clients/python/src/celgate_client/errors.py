"""Exceptions for failed calls, carrying the `google.rpc` details celgate attaches to its status.

celgate answers every refusal with a `google.rpc.Status` in the `grpc-status-details-bin`
trailer: an `ErrorInfo` (stable `reason`, `domain: celgate`, metadata) and, by kind, a
`BadRequest` (invalid field), a `QuotaFailure` (budget) or a `RetryInfo` (rate limit).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

DETAILS_TRAILER = "grpc-status-details-bin"
DECISION_TRAILER = "celgate-decision-id"

M = TypeVar("M", bound=Message)


class CelgateError(Exception):
    """A call celgate (or the transport) refused. `code` is the gRPC status code."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        details: Iterable[Any] = (),
        decision_id: str | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.decision_id = decision_id
        self._details = list(details)
        self.error_info = self._detail(error_details_pb2.ErrorInfo)
        self.bad_request = self._detail(error_details_pb2.BadRequest)
        self.quota_failure = self._detail(error_details_pb2.QuotaFailure)
        self.retry_info = self._detail(error_details_pb2.RetryInfo)

    def _detail(self, kind: type[M]) -> M | None:
        for packed in self._details:
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                return detail
        return None

    @property
    def reason(self) -> str:
        """celgate's stable reason (`BUDGET_EXHAUSTED`, `RATE_LIMITED`, ...), or ""."""
        return self.error_info.reason if self.error_info is not None else ""

    @property
    def retry_after(self) -> float | None:
        """Seconds to wait before retrying, when the server said (rate limits)."""
        if self.retry_info is None or not self.retry_info.HasField("retry_delay"):
            return None
        return float(self.retry_info.retry_delay.ToNanoseconds()) / 1e9


class InvalidArgument(CelgateError):
    """The request is malformed; `bad_request` names the field."""


class Unauthenticated(CelgateError):
    pass


class PermissionDenied(CelgateError):
    """A policy deny, a residency refusal or a model outside the tenant's list."""


class NotFound(CelgateError):
    pass


class ResourceExhausted(CelgateError):
    """A budget (`quota_failure`) or a rate limit (`retry_info`, `retry_after`)."""


class FailedPrecondition(CelgateError):
    """No routing policy is loaded, or an upstream refused the request."""


class Unavailable(CelgateError):
    """Every candidate model failed or is unreachable, or the gateway is."""


class DeadlineExceeded(CelgateError):
    pass


class Cancelled(CelgateError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[CelgateError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
}


def _trailer(metadata: Iterable[tuple[str, str | bytes]] | None, key: str) -> str | bytes | None:
    for name, value in metadata or ():
        if name == key:
            return value
    return None


def from_rpc_error(
    code: grpc.StatusCode,
    details: str | None,
    trailing_metadata: Iterable[tuple[str, str | bytes]] | None,
) -> CelgateError:
    """The exception for a failed call, from its code, message and trailers."""
    packed: list[Any] = []
    raw = _trailer(trailing_metadata, DETAILS_TRAILER)
    if isinstance(raw, bytes):
        status = status_pb2.Status()
        try:
            status.ParseFromString(raw)
        except DecodeError:  # a garbled trailer must not hide the error itself
            status = status_pb2.Status()
        # Details are trusted only when the status inside agrees with the call's code.
        if status.code == code.value[0]:
            packed = list(status.details)
    decision = _trailer(trailing_metadata, DECISION_TRAILER)
    kind = _BY_CODE.get(code, CelgateError)
    return kind(
        code, details or "", packed, decision if isinstance(decision, str) and decision else None
    )


def from_sync_error(error: grpc.RpcError) -> CelgateError:
    call: Any = error  # a grpc.Call in practice: code(), details(), trailing_metadata()
    return from_rpc_error(call.code(), call.details(), call.trailing_metadata())


def from_aio_error(error: grpc.aio.AioRpcError) -> CelgateError:
    return from_rpc_error(error.code(), error.details(), error.trailing_metadata())
