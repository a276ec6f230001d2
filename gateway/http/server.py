"""The HTTP listener (aiohttp, on the gateway's event loop): OpenAI's Chat Completions and
Anthropic's Messages formats (docs/http.md).

Protocol mapping only: each handler authenticates with the gRPC surface's `Authenticator`,
maps JSON to the API's request (wire.py), converts and validates it with the gRPC surface's
own `convert.to_chat_request`, runs the one `Pipeline`, maps the answer or the error
(status.py) back to the wire format, and hands the request's one `Outcome` to telemetry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web

from gateway import errors
from gateway.auth import Authenticator
from gateway.chat import ChatRequest
from gateway.config import Config, LimitsConfig
from gateway.convert import to_chat_request
from gateway.http.chat_completions import ChatCall, route_headers
from gateway.http.status import HttpError, http_error, protocol_error, status_of
from gateway.http.tls import server_context
from gateway.http.wire import ANTHROPIC, OPENAI, Wire, dumps
from gateway.outcome import Call, Ending, Progress
from gateway.pipeline import Pipeline, deadline_from
from gateway.service import status_code
from gateway.telemetry import Telemetry
from gateway.v1 import policy_pb2

log = logging.getLogger(__name__)

_JSON = "application/json"
_DECISION = "x-celgate-decision-id"
_TRACE_HEADERS = ("traceparent", "tracestate")
_LOCATIONS = {policy_pb2.LOCATION_ON_PREM: "on_prem", policy_pb2.LOCATION_CLOUD: "cloud"}


def _json_response(
    status: int, body: Any, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(status=status, body=dumps(body), content_type=_JSON, headers=headers)


def _error_response(error: HttpError) -> web.Response:
    return _json_response(error.status, error.body, error.headers)


def _outcome(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, asyncio.CancelledError | GeneratorExit | ConnectionResetError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class _Tracked:
    """One HTTP request's `Progress`, whose outcome goes to telemetry exactly once. Its status is
    the canonical (gRPC) code of the same outcome, so the decision log reads the same whichever
    surface a request came through."""

    def __init__(self, telemetry: Telemetry, call: Call) -> None:
        self.progress = Progress(call)
        self._telemetry = telemetry
        self._done = False

    @property
    def decision_id(self) -> str:
        return self.progress.call.decision_id

    def finish(
        self, code: grpc.StatusCode, error: BaseException | None = None, *, fault: bool = False
    ) -> None:
        if self._done:
            return
        self._done = True
        ending = Ending(code.name, code.value[0], fault, error)
        self._telemetry.record(self.progress.outcome(ending))

    def refused(self, error: errors.GatewayError) -> None:
        self.finish(status_code(error), error, fault=status_of(error)[0] >= 500)


def _auth_context(request: web.Request) -> dict[str, list[bytes]]:
    """The verified client certificate's names, under the keys gRPC's auth context uses, so
    one Authenticator serves both surfaces."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    if not cert:
        return {}
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    sans = [value for _kind, value in cert.get("subjectAltName", ())]
    return {
        "x509_common_name": [n.encode() for n in names],
        "x509_subject_alternative_name": [s.encode() for s in sans],
    }


class HttpApi:
    """The handlers. Stateless apart from the shared pipeline, authenticator and telemetry."""

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

    def _tenant(self, request: web.Request, key_header: str | None = None) -> str:
        metadata = [("authorization", v) for v in request.headers.getall("Authorization", ())]
        if key_header is not None:
            # The same key, sent the way that wire format's SDKs send it. Both at once is two
            # credentials: refused, as on gRPC.
            metadata += [
                ("authorization", f"Bearer {v}") for v in request.headers.getall(key_header, ())
            ]
        return self.authenticator.authenticate(metadata, _auth_context(request))

    def _observe(
        self, method: str, request: web.Request, service: str, *, audited: bool = True
    ) -> _Tracked:
        # W3C trace context, as gRPC metadata carries it: the caller's trace continues.
        carrier = {k: request.headers[k] for k in _TRACE_HEADERS if k in request.headers}
        call = Call.start(method, service=service, system="http", carrier=carrier, audited=audited)
        return _Tracked(self.telemetry, call)

    async def _body(self, request: web.Request) -> Any:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _Refused(
                protocol_error(413, "the request body is larger than server.max_message_bytes")
            ) from None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            where = f" at char {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
            raise _Refused(protocol_error(400, f"the body is not valid JSON{where}")) from None
        except RecursionError:
            # Nesting no request needs; the parser gives up before the interpreter does.
            raise _Refused(protocol_error(400, "the body nests JSON too deeply")) from None

    async def _guarded(
        self,
        observation: _Tracked,
        run: Callable[[], Awaitable[web.StreamResponse]],
        wire: Wire = OPENAI,
    ) -> web.StreamResponse:
        try:
            response = await run()
        except errors.GatewayError as error:
            log.info("request failed: %s (%s)", error.reason, status_code(error).name)
            observation.refused(error)
            return _error_response(wire.shape(http_error(error, observation.decision_id)))
        except BaseException as exc:
            code = _outcome(exc)
            observation.finish(code, exc, fault=code == grpc.StatusCode.UNKNOWN)
            if isinstance(exc, Exception) and not isinstance(exc, ConnectionResetError):
                # The type only: an exception's text may quote content.
                log.error("HTTP request failed: %s", type(exc).__name__)
                failure = errors.InternalError("internal error; the request may not have run")
                return _error_response(wire.shape(http_error(failure, observation.decision_id)))
            raise
        observation.finish(grpc.StatusCode.OK)
        return response

    async def chat(self, request: web.Request, wire: Wire) -> web.StreamResponse:
        """One chat in `wire`'s format: the same steps as the gRPC Chat and ChatStream."""
        try:
            body = await self._body(request)
        except _Refused as refused:
            return _error_response(wire.shape(refused.error))
        streaming = isinstance(body, dict) and body.get("stream") is True
        observation = self._observe("ChatStream" if streaming else "Chat", request, wire.service)

        async def run() -> web.StreamResponse:
            tenant = self._tenant(request, wire.key_header)
            observation.progress.tenant = tenant
            call = wire.parse(body, request.headers)
            req = to_chat_request(call.request, self.limits, tenant=tenant, streaming=call.stream)
            deadline = deadline_from(None, self.default_deadline_s)
            if call.stream:
                return await self._stream(request, wire, call, req, deadline, observation)
            result, route = await self.pipeline.chat(req, deadline, observation.progress)
            return _json_response(200, wire.answer(result, route), route_headers(route))

        return await self._guarded(observation, run, wire)

    async def _stream(
        self,
        request: web.Request,
        wire: Wire,
        call: ChatCall,
        req: ChatRequest,
        deadline: float,
        observation: _Tracked,
    ) -> web.StreamResponse:
        encoder = wire.encoder(observation.decision_id, call)
        # An async generator: closing it ends the upstream call and charges what was generated.
        pieces = self.pipeline.stream(req, deadline, observation.progress)
        async with contextlib.aclosing(pieces):
            # Headers wait for the first piece: a refusal before it (policy, residency, budget,
            # rate limit, every model down) is then an ordinary HTTP error, as for `stream: false`.
            first = await anext(pieces)
            response = web.StreamResponse(
                status=200,
                headers={
                    "content-type": "text/event-stream; charset=utf-8",
                    "cache-control": "no-cache",
                    _DECISION: observation.decision_id,
                },
            )
            await response.prepare(request)
            try:
                await response.write(encoder.encode(*first))
                async for chunk, route in pieces:
                    await response.write(encoder.encode(chunk, route))
            except ConnectionResetError as gone:
                observation.finish(grpc.StatusCode.CANCELLED, gone)
                return response
            except errors.GatewayError as error:
                # Too late for a status: the SDKs raise on an error event.
                observation.refused(error)
                await response.write(encoder.error(http_error(error, observation.decision_id)))
                await response.write_eof()
                return response
            await response.write(encoder.done())
            await response.write_eof()
        return response

    async def models(self, request: web.Request) -> web.StreamResponse:
        observation = self._observe("ListModels", request, OPENAI.service, audited=False)

        async def run() -> web.StreamResponse:
            observation.progress.tenant = self._tenant(request)
            data = [
                {
                    "id": "auto",
                    "object": "model",
                    "created": 0,
                    "owned_by": "celgate",
                    "celgate": {"description": "the routing policy chooses"},
                }
            ]
            for info in self.pipeline.model_infos().values():
                data.append(_model_json(info))
            return _json_response(200, {"object": "list", "data": data})

        return await self._guarded(observation, run)


def _model_json(info: policy_pb2.ModelInfo) -> dict[str, Any]:
    return {
        "id": info.alias,
        "object": "model",
        "created": 0,
        "owned_by": info.provider,
        "celgate": {
            "upstream_model": info.upstream_model,
            "location": _LOCATIONS.get(info.location, ""),
            "clearance": policy_pb2.Classification.Name(info.clearance).removeprefix(
                "CLASSIFICATION_"
            ),
            "input_price_per_mtok": info.input_price_per_mtok,
            "output_price_per_mtok": info.output_price_per_mtok,
            "healthy": info.healthy,
        },
    }


class _Refused(Exception):
    def __init__(self, error: HttpError) -> None:
        super().__init__(error.status)
        self.error = error


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown paths and wrong methods answer in OpenAI's error shape too."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return _error_response(
            protocol_error(404, f"no such endpoint: {request.path}", code="NOT_FOUND")
        )
    except web.HTTPMethodNotAllowed as exc:
        error = protocol_error(
            405,
            f"{request.method} is not allowed here; use {', '.join(sorted(exc.allowed_methods))}",
            code="METHOD_NOT_ALLOWED",
        )
        return _error_response(error)


@dataclass
class HttpServer:
    """A started HTTP listener. `port` is the bound port (useful with port 0)."""

    runner: web.AppRunner
    port: int

    async def stop(self) -> None:
        """Stop accepting, give in-flight requests up to server.grace_period_s, then close."""
        await self.runner.shutdown()
        await self.runner.cleanup()


async def start_http(
    config: Config, pipeline: Pipeline, authenticator: Authenticator, telemetry: Telemetry
) -> HttpServer:
    """Listen on `http.listen`, with TLS (and client certificates) exactly when the gRPC port
    has them. Raises OSError naming the field when the address cannot be bound."""
    assert config.http.listen is not None
    api = HttpApi(
        pipeline,
        authenticator,
        telemetry,
        limits=config.limits,
        default_deadline_s=config.server.default_deadline_s,
    )
    app = web.Application(
        client_max_size=config.server.max_message_bytes, middlewares=[_json_errors]
    )
    app.router.add_post("/v1/chat/completions", functools.partial(api.chat, wire=OPENAI))
    app.router.add_post("/v1/messages", functools.partial(api.chat, wire=ANTHROPIC))
    app.router.add_get("/v1/models", api.models)
    runner = web.AppRunner(
        app,
        access_log=None,  # the decision log and spans record requests, without content
        handle_signals=False,
        # A caller that disconnects cancels its request, as on gRPC: the upstream call stops
        # and its reservation is settled.
        handler_cancellation=True,
        shutdown_timeout=config.server.grace_period_s,
    )
    await runner.setup()
    host, _, port = config.http.listen.rpartition(":")
    context: ssl.SSLContext | None = server_context(config)
    # Workers share the port as they share the gRPC one (the kernel spreads connections).
    shared = config.server.workers > 1
    site = web.TCPSite(runner, host.strip("[]"), int(port), ssl_context=context, reuse_port=shared)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise OSError(
            f"cannot listen on {config.http.listen} (http.listen): the address is in use or "
            "not available on this host"
        ) from None
    bound = int(runner.addresses[0][1]) if runner.addresses else int(port)
    log.info("OpenAI-compatible HTTP API listening on %s:%d", host, bound)
    return HttpServer(runner, bound)
