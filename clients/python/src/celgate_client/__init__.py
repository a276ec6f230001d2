"""Client for celgate's gRPC API (`gateway.v1.GatewayService`).

`Client` blocks, `AsyncClient` is for asyncio; both return the generated response messages
(`celgate_client.v1.gateway_pb2`) and raise `CelgateError` subclasses carrying the server's
ErrorInfo, QuotaFailure and RetryInfo details.
"""

from celgate_client._client import TLS, AsyncClient, Client
from celgate_client._requests import Options
from celgate_client.errors import (
    Cancelled,
    CelgateError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from celgate_client.v1 import gateway_pb2, policy_pb2

__all__ = [
    "TLS",
    "AsyncClient",
    "Cancelled",
    "CelgateError",
    "Client",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "Options",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "gateway_pb2",
    "policy_pb2",
]
