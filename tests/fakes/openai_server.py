"""An OpenAI-compatible upstream double speaking the real Chat Completions wire format.

    with FakeOpenAI() as fake:
        client = openai.AsyncOpenAI(base_url=fake.url, api_key="sk-test")

POST /v1/chat/completions answers `chat.completion` JSON, or with `stream: true` an SSE stream
of `chat.completion.chunk` events (tool-call arguments split over several deltas, a usage chunk
with empty `choices` when `stream_options.include_usage` is true, then `data: [DONE]`).
GET /v1/models lists the known models. Errors use OpenAI's `{"error": {message, type, param,
code}}` body with the real status codes.

Run standalone: `python -m tests.fakes.openai_server --port 8001`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from aiohttp import web

from tests.fakes._server import (
    Failure,
    FakeServer,
    FakeToolCall,
    Planned,
    Reply,
    compact,
    count_completion_tokens,
    count_prompt_tokens,
    drop_connection,
    json_response,
    main,
    split_words,
)

DEFAULT_MODELS = ("gpt-5.5", "gpt-5-mini", "gpt-4o-mini", "deepseek-chat", "claude-opus-4-7")

# What OpenAI answers for each status when a test does not script a message.
_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    404: ("The requested resource was not found.", "invalid_request_error", None),
    422: ("Unprocessable request.", "invalid_request_error", None),
    429: (
        "Rate limit reached for requests per min (RPM). Please try again in 1s.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


def error_response(
    status: int,
    message: str | None = None,
    *,
    code: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
) -> web.Response:
    default_message, kind, default_code = _ERRORS.get(status, ("Error.", "server_error", None))
    body = {
        "error": {
            "message": message if message is not None else default_message,
            "type": kind,
            "param": param,
            "code": code if code is not None else default_code,
        }
    }
    headers = {}
    if retry_after is not None:
        headers["retry-after"] = f"{retry_after:g}"
        headers["x-ratelimit-remaining-requests"] = "0"
    return json_response(body, status=status, headers=headers)


def _mask(key: str) -> str:
    # OpenAI shows the first and last characters of a wrong key, never all of it.
    return f"{key[:3]}{'*' * 8}{key[-4:]}" if len(key) > 8 else "***"


def _call_id(reply_index: int, call: FakeToolCall, position: int) -> str:
    if call.id:
        return call.id
    digest = hashlib.sha256(f"{reply_index}:{position}:{call.name}".encode()).hexdigest()
    return f"call_{digest[:24]}"


class FakeOpenAI(FakeServer):
    provider = "openai"
    url_suffix = "/v1"

    def __init__(
        self,
        *,
        port: int = 0,
        models: tuple[str, ...] = DEFAULT_MODELS,
        api_key: str | None = None,
    ) -> None:
        super().__init__(port=port, models=models)
        # When set, requests must carry `Authorization: Bearer <api_key>` or get a 401.
        self.api_key = api_key
        self._serial = 0

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self._chat),
            web.get("/v1/models", self._models),
        ]

    async def _models(self, request: web.Request) -> web.Response:
        await self.record(request)
        data = [
            {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}
            for name in self.models
        ]
        return json_response({"object": "list", "data": data})

    def _check(self, request: web.Request, body: Any) -> web.Response | None:
        """The validation OpenAI does before any model runs, in the same order."""
        if self.api_key is not None:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if given != self.api_key:
                return error_response(
                    401,
                    f"Incorrect API key provided: {_mask(given)}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                )
        if not isinstance(body, dict):
            return error_response(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly.)",
            )
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return error_response(400, "you must provide a model parameter")
        messages = body.get("messages")
        if not isinstance(messages, list):
            return error_response(400, "'messages' is a required property", param="messages")
        if not messages:
            return error_response(400, "[] is too short - 'messages'", param="messages")
        if model not in self.models:
            return error_response(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        return None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        rejected = self._check(request, body)
        if rejected is not None:
            return rejected
        self.planning = body
        plan = self.plan()
        with self._lock:
            self._serial += 1
            serial = self._serial
        failure = plan.failure
        if failure is not None and failure.kind == "status":
            return error_response(
                failure.status,
                failure.message,
                code=failure.code,
                retry_after=failure.retry_after,
            )
        if failure is not None and failure.kind == "drop":
            return drop_connection(request)
        try:
            if plan.first_byte_delay:
                await asyncio.sleep(plan.first_byte_delay)
            if body.get("stream"):
                return await self._stream(request, body, plan, serial)
            if failure is not None:  # a mid-stream failure on a non-streaming request
                return drop_connection(request)
            response = json_response(self._completion(body, plan.reply, serial))
            self.note_completed()
            return response
        except asyncio.CancelledError:
            self.note_disconnect()
            raise

    def _usage(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = count_prompt_tokens(body.get("messages"))
        completion = reply.completion_tokens
        if completion is None:
            completion = count_completion_tokens(reply)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reply.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    @staticmethod
    def _finish(reply: Reply) -> str:
        if reply.finish_reason is not None:
            return reply.finish_reason
        return "tool_calls" if reply.tool_calls else "stop"

    def _completion(self, body: dict[str, Any], reply: Reply, serial: int) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.content if reply.content or not reply.tool_calls else None,
            "refusal": None,
            "annotations": [],
        }
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": _call_id(serial, call, i),
                    "type": "function",
                    "function": {"name": call.name, "arguments": compact(call.arguments)},
                }
                for i, call in enumerate(reply.tool_calls)
            ]
        return {
            "id": f"chatcmpl-fake{serial:08d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model or body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self._finish(reply),
                }
            ],
            "usage": self._usage(body, reply),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def _chunks(self, body: dict[str, Any], reply: Reply, serial: int) -> list[dict[str, Any]]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": f"chatcmpl-fake{serial:08d}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": reply.model or body["model"],
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        if include_usage:
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "choices": [choice]}

        chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
        if reply.pieces:
            chunks += [chunk({"content": piece}) for piece in reply.pieces]
        elif reply.content:
            chunks += [chunk({"content": piece}) for piece in split_words(reply.content)]
        for i, call in enumerate(reply.tool_calls):
            head = {
                "index": i,
                "id": _call_id(serial, call, i),
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            chunks.append(chunk({"tool_calls": [head]}))
            arguments = compact(call.arguments)
            third = max(1, len(arguments) // 3)
            for start in range(0, len(arguments), third):
                piece = {"index": i, "function": {"arguments": arguments[start : start + third]}}
                chunks.append(chunk({"tool_calls": [piece]}))
        chunks.append(chunk({}, self._finish(reply)))
        if include_usage:
            chunks.append({**base, "choices": [], "usage": self._usage(body, reply)})
        return chunks

    async def _stream(
        self, request: web.Request, body: dict[str, Any], plan: Planned, serial: int
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            }
        )
        await response.prepare(request)
        failure: Failure | None = plan.failure
        try:
            for sent, event in enumerate(self._chunks(body, plan.reply, serial)):
                if failure is not None and sent == failure.after_chunks:
                    if failure.drop_connection:
                        return drop_connection(request)
                    error = {
                        "error": {
                            "message": failure.message
                            or "The server had an error while processing your request.",
                            "type": "server_error",
                            "param": None,
                            "code": None,
                        }
                    }
                    await response.write(f"data: {compact(error)}\n\n".encode())
                    await response.write_eof()
                    return response
                if sent and plan.chunk_delay:
                    await asyncio.sleep(plan.chunk_delay)
                await response.write(f"data: {compact(event)}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionResetError:
            self.note_disconnect()
            return response
        self.note_completed()
        return response


if __name__ == "__main__":
    main(FakeOpenAI, "OpenAI")
