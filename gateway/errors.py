"""Typed errors raised by the pipeline. `service.py` alone maps them to gRPC status codes.

Messages say what to fix and never contain prompt content, matched values, keys or URLs with
credentials.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class. `reason` is the stable ErrorInfo reason; `metadata` goes into ErrorInfo."""

    reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None, **metadata: str) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = metadata


class InvalidRequest(GatewayError):
    """The request is malformed; `field` names the offending field."""

    reason = "INVALID_REQUEST"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field=field)
        self.field = field


class Unauthenticated(GatewayError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(GatewayError):
    """Policy deny, data-residency violation or a model outside the tenant's list."""

    reason = "POLICY_DENIED"


class BudgetExhausted(GatewayError):
    reason = "BUDGET_EXHAUSTED"

    def __init__(self, message: str, *, subject: str, **metadata: str) -> None:
        super().__init__(message, subject=subject, **metadata)
        self.subject = subject


class RateLimited(GatewayError):
    reason = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after_s: float, **metadata: str) -> None:
        super().__init__(message, **metadata)
        self.retry_after_s = retry_after_s


class NoPolicy(GatewayError):
    reason = "NO_POLICY"


class Unavailable(GatewayError):
    reason = "UPSTREAM_UNAVAILABLE"


class DeadlineExceeded(GatewayError):
    reason = "DEADLINE_EXCEEDED"


class UpstreamRejected(GatewayError):
    """The upstream refused the request (4xx other than 429); `status` is its HTTP status."""

    reason = "UPSTREAM_REJECTED"

    def __init__(self, message: str, *, status: int, model: str) -> None:
        super().__init__(message, model=model, upstream_status=str(status))
        self.status = status


class InternalError(GatewayError):
    """A failure inside celgate (a detector or policy evaluation error): fail closed."""

    reason = "INTERNAL"
