"""Typed errors raised by the pipeline. `service.py` alone maps them to gRPC status codes.

Messages say what to fix and never contain prompt content, matched values, keys or URLs with
credentials.
"""

from __future__ import annotations

from typing import Final


class Reason:
    """Every ErrorInfo reason the gateway gives (the stable, machine-readable why of a refusal
    or failure), in one place: the errors below, enforcement, the decision log and telemetry
    all use these names."""

    INTERNAL: Final = "INTERNAL"
    INVALID_REQUEST: Final = "INVALID_REQUEST"
    UNAUTHENTICATED: Final = "UNAUTHENTICATED"
    POLICY_DENIED: Final = "POLICY_DENIED"
    POLICY_EVALUATION_FAILED: Final = "POLICY_EVALUATION_FAILED"
    INSPECTION_FAILED: Final = "INSPECTION_FAILED"
    DATA_RESIDENCY: Final = "DATA_RESIDENCY"
    MODEL_NOT_ALLOWED: Final = "MODEL_NOT_ALLOWED"
    NO_CANDIDATE: Final = "NO_CANDIDATE"
    UNKNOWN_MODEL: Final = "UNKNOWN_MODEL"
    CLASSIFICATION_CEILING: Final = "CLASSIFICATION_CEILING"
    BUDGET_EXHAUSTED: Final = "BUDGET_EXHAUSTED"
    RATE_LIMITED: Final = "RATE_LIMITED"
    INFLIGHT_LIMIT: Final = "INFLIGHT_LIMIT"  # a tenant's large requests in inspection
    LEDGER_UNAVAILABLE: Final = "LEDGER_UNAVAILABLE"  # Redis (budgets, rate limits) away
    NO_POLICY: Final = "NO_POLICY"
    UPSTREAM_UNAVAILABLE: Final = "UPSTREAM_UNAVAILABLE"
    UPSTREAM_REJECTED: Final = "UPSTREAM_REJECTED"
    DEADLINE_EXCEEDED: Final = "DEADLINE_EXCEEDED"


# The refusals of enforcement (residency, the tenant's models and ceiling): a request refused
# for one of these has the enforcement outcome `denied`.
ENFORCEMENT_REASONS: Final = frozenset(
    {
        Reason.DATA_RESIDENCY,
        Reason.MODEL_NOT_ALLOWED,
        Reason.NO_CANDIDATE,
        Reason.UNKNOWN_MODEL,
        Reason.CLASSIFICATION_CEILING,
    }
)


class GatewayError(Exception):
    """Base class. `reason` is the stable ErrorInfo reason; `metadata` goes into ErrorInfo."""

    reason: str = Reason.INTERNAL

    def __init__(self, message: str, *, reason: str | None = None, **metadata: str) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = metadata


class InvalidRequest(GatewayError):
    """The request is malformed; `field` names the offending field."""

    reason = Reason.INVALID_REQUEST

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field=field)
        self.field = field


class Unauthenticated(GatewayError):
    reason = Reason.UNAUTHENTICATED


class PermissionDenied(GatewayError):
    """Policy deny, data-residency violation or a model outside the tenant's list."""

    reason = Reason.POLICY_DENIED


class BudgetExhausted(GatewayError):
    reason = Reason.BUDGET_EXHAUSTED

    def __init__(self, message: str, *, subject: str, **metadata: str) -> None:
        super().__init__(message, subject=subject, **metadata)
        self.subject = subject


class RateLimited(GatewayError):
    reason = Reason.RATE_LIMITED

    def __init__(self, message: str, *, retry_after_s: float, **metadata: str) -> None:
        super().__init__(message, **metadata)
        self.retry_after_s = retry_after_s


class NoPolicy(GatewayError):
    reason = Reason.NO_POLICY


class Unavailable(GatewayError):
    reason = Reason.UPSTREAM_UNAVAILABLE


class DeadlineExceeded(GatewayError):
    reason = Reason.DEADLINE_EXCEEDED


class UpstreamRejected(GatewayError):
    """The upstream refused the request (4xx other than 429); `status` is its HTTP status."""

    reason = Reason.UPSTREAM_REJECTED

    def __init__(self, message: str, *, status: int, model: str) -> None:
        super().__init__(message, model=model, upstream_status=str(status))
        self.status = status


class InternalError(GatewayError):
    """A failure inside celgate (a detector or policy evaluation error): fail closed."""

    reason = Reason.INTERNAL
