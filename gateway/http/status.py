"""The HTTP surface's one place for error mapping: a pipeline error becomes the HTTP status an
OpenAI client SDK expects, OpenAI's error JSON shape and celgate's reason (the same reason the
gRPC surface puts in ErrorInfo).

The OpenAI SDKs pick their exception class from the status (400 BadRequestError, 401
AuthenticationError, 403 PermissionDeniedError, 404 NotFoundError, 429 RateLimitError, >= 500
InternalServerError) and retry 429 and >= 500 unless the response says `x-should-retry: false`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gateway import errors

DOMAIN = "celgate"

# Upstream refusals the caller can act on keep their status; anything else is the gateway's
# problem with its upstream (a 401 from a provider means celgate's provider key is wrong, not
# the caller's celgate key), so it is a 502.
_UPSTREAM_PASSTHROUGH = frozenset({400, 404, 409, 413, 422})

# (error kind, HTTP status, OpenAI error type). First match wins: order subclasses first.
_STATUS: list[tuple[type[errors.GatewayError], int, str]] = [
    (errors.InvalidRequest, 400, "invalid_request_error"),
    (errors.Unauthenticated, 401, "authentication_error"),
    (errors.PermissionDenied, 403, "permission_error"),
    (errors.BudgetExhausted, 429, "insufficient_quota"),
    (errors.RateLimited, 429, "rate_limit_error"),
    (errors.NoPolicy, 503, "service_unavailable"),
    (errors.Unavailable, 503, "service_unavailable"),
    (errors.DeadlineExceeded, 504, "timeout"),
]

# Request fields whose HTTP name differs from the pipeline's (which names the gRPC field).
_HTTP_FIELD = {"preferred_model": "model"}


@dataclass(frozen=True, slots=True)
class HttpError:
    """What to send for a failed request: status, JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def status_of(error: errors.GatewayError) -> tuple[int, str]:
    """The HTTP status and OpenAI error type for a pipeline error."""
    if isinstance(error, errors.UpstreamRejected):
        status = error.status if error.status in _UPSTREAM_PASSTHROUGH else 502
        return status, "upstream_error"
    if isinstance(error, errors.InvalidRequest) and error.field == "preferred_model":
        return 404, "not_found_error"  # an unknown model alias, as OpenAI answers it
    for kind, status, kind_name in _STATUS:
        if isinstance(error, kind):
            return status, kind_name
    return 500, "server_error"


def http_error(error: errors.GatewayError, decision_id: str | None = None) -> HttpError:
    """OpenAI's error shape, `{"error": {message, type, param, code}}`, with `code` set to
    celgate's reason and a `celgate` member carrying the reason, domain and metadata."""
    status, kind = status_of(error)
    param: str | None = None
    message = error.message
    if isinstance(error, errors.InvalidRequest):
        param = _HTTP_FIELD.get(error.field, error.field)
        if param != error.field:
            message = f"{param}:{message.removeprefix(error.field + ':')}"
    detail: dict[str, Any] = {"reason": error.reason, "domain": DOMAIN, "metadata": error.metadata}
    headers: dict[str, str] = {}
    if decision_id:
        detail["decision_id"] = decision_id
        headers["x-celgate-decision-id"] = decision_id
    if isinstance(error, errors.RateLimited):
        # Whole seconds for retry-after (RFC 9110); the SDKs also read retry-after-ms.
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after_s)))
        headers["retry-after-ms"] = str(max(1, math.ceil(error.retry_after_s * 1000)))
        detail["retry_after_s"] = error.retry_after_s
    elif isinstance(error, errors.BudgetExhausted):
        # Retrying cannot help until the budget window turns over.
        headers["x-should-retry"] = "false"
        detail["subject"] = error.subject
    body = {
        "error": {"message": message, "type": kind, "param": param, "code": error.reason},
        "celgate": detail,
    }
    return HttpError(status, body, headers)


def protocol_error(
    status: int, message: str, *, param: str | None = None, code: str = "INVALID_REQUEST"
) -> HttpError:
    """An error found by the HTTP layer itself (bad JSON, wrong method, unknown path)."""
    kind = {404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error"}
    body = {
        "error": {
            "message": message,
            "type": kind.get(status, "invalid_request_error"),
            "param": param,
            "code": code,
        },
        "celgate": {"reason": code, "domain": DOMAIN, "metadata": {}},
    }
    return HttpError(status, body, {"x-should-retry": "false"})


# Anthropic's error types by status (its SDKs pick the exception class from the status too:
# 400 BadRequestError ... 429 RateLimitError, >= 500 InternalServerError).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def anthropic_error(error: HttpError) -> HttpError:
    """The same error in Anthropic's shape, `{"type": "error", "error": {type, message}}`;
    celgate's member (reason, metadata, decision id) stays beside it."""
    message = error.body["error"]["message"]
    body = {
        "type": "error",
        "error": {"type": _ANTHROPIC_TYPES.get(error.status, "api_error"), "message": message},
        "celgate": error.body["celgate"],
    }
    return HttpError(error.status, body, error.headers)
