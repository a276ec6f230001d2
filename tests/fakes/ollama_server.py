"""An Ollama upstream double speaking Ollama's real HTTP API.

    with FakeOllama() as fake:
        client = ollama.AsyncClient(host=fake.url)

POST /api/chat answers one JSON object, or (the default, as in Ollama, unless `"stream": false`)
an NDJSON stream: one line per message fragment, tool calls with their arguments as JSON
objects and no call ids, and a final line with `done: true`, `done_reason`, durations,
`prompt_eval_count` and `eval_count`. GET /api/tags lists the pulled models. Errors are
`{"error": "..."}` with the real status codes, including 404 `model "x" not found, try pulling
it first`, and a failing stream ends with an `{"error": ...}` line.

Run standalone: `python -m tests.fakes.ollama_server --port 11435`.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.fakes._server import (
    FakeServer,
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

DEFAULT_MODELS = ("llama3.1:8b", "qwen3:8b")

_ERRORS = {
    400: "invalid request",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    429: "too many requests",
    500: "an error was encountered while running the model",
    503: "server busy, please try again. maximum pending requests exceeded",
}


def error_response(status: int, message: str | None = None) -> web.Response:
    return json_response({"error": message or _ERRORS.get(status, "error")}, status=status)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class FakeOllama(FakeServer):
    provider = "ollama"
    url_suffix = ""

    def __init__(self, *, port: int = 0, models: tuple[str, ...] = DEFAULT_MODELS) -> None:
        super().__init__(port=port, models=models)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self._root),
            web.get("/api/version", self._version),
            web.get("/api/tags", self._tags),
            web.post("/api/chat", self._chat),
        ]

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _version(self, request: web.Request) -> web.Response:
        return json_response({"version": "0.12.6"})

    async def _tags(self, request: web.Request) -> web.Response:
        await self.record(request)
        models = [
            {
                "name": name,
                "model": name,
                "modified_at": "2025-01-01T00:00:00Z",
                "size": 4_920_753_328,
                "digest": hashlib.sha256(name.encode()).hexdigest(),
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": name.split(":")[0],
                    "families": [name.split(":")[0]],
                    "parameter_size": "8.0B",
                    "quantization_level": "Q4_K_M",
                },
            }
            for name in self.models
        ]
        return json_response({"models": models})

    def _check(self, body: Any) -> web.Response | None:
        if not isinstance(body, dict):
            return error_response(400, "invalid character looking for beginning of value")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return error_response(400, "model is required")
        messages = body.get("messages", [])
        if not isinstance(messages, list):
            return error_response(400, "json: cannot unmarshal messages")
        fmt = body.get("format")
        if fmt is not None and fmt not in ("", "json") and not isinstance(fmt, dict):
            return error_response(400, 'invalid format: expected "json" or a JSON schema')
        if model not in self.models:
            return error_response(404, f'model "{model}" not found, try pulling it first')
        return None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        rejected = self._check(body)
        if rejected is not None:
            return rejected
        plan = self.plan()
        failure = plan.failure
        if failure is not None and failure.kind == "status":
            return error_response(failure.status, failure.message)
        if failure is not None and failure.kind == "drop":
            return drop_connection(request)
        try:
            if plan.first_byte_delay:
                await asyncio.sleep(plan.first_byte_delay)
            if body.get("stream", True):
                return await self._stream(request, body, plan)
            if failure is not None:  # a mid-stream failure on a non-streaming request
                return drop_connection(request)
            response = json_response(self._whole(body, plan.reply))
            self.note_completed()
            return response
        except asyncio.CancelledError:
            self.note_disconnect()
            raise

    @staticmethod
    def _tool_calls(reply: Reply) -> list[dict[str, Any]]:
        return [
            {"function": {"name": call.name, "arguments": call.arguments}}
            for call in reply.tool_calls
        ]

    def _final(self, body: dict[str, Any], reply: Reply, message: dict[str, Any]) -> dict[str, Any]:
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = count_prompt_tokens(body.get("messages"))
        completion = reply.completion_tokens
        if completion is None:
            completion = count_completion_tokens(reply)
        # Ollama reports "stop" even when the model called tools.
        reason = reply.finish_reason or "stop"
        return {
            "model": reply.model or body["model"],
            "created_at": _now(),
            "message": message,
            "done": True,
            "done_reason": "stop" if reason == "tool_calls" else reason,
            "total_duration": 1_250_000_000,
            "load_duration": 20_000_000,
            "prompt_eval_count": prompt,
            "prompt_eval_duration": 130_000_000,
            "eval_count": completion,
            "eval_duration": 1_100_000_000,
        }

    def _whole(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = self._tool_calls(reply)
        return self._final(body, reply, message)

    def _lines(self, body: dict[str, Any], reply: Reply) -> list[dict[str, Any]]:
        model = reply.model or body["model"]
        lines = []
        if reply.content:
            for piece in split_words(reply.content):
                message = {"role": "assistant", "content": piece}
                lines.append(
                    {"model": model, "created_at": _now(), "message": message, "done": False}
                )
        if reply.tool_calls:
            calls = {"role": "assistant", "content": "", "tool_calls": self._tool_calls(reply)}
            lines.append({"model": model, "created_at": _now(), "message": calls, "done": False})
        lines.append(self._final(body, reply, {"role": "assistant", "content": ""}))
        return lines

    async def _stream(
        self, request: web.Request, body: dict[str, Any], plan: Planned
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        failure = plan.failure
        try:
            for sent, line in enumerate(self._lines(body, plan.reply)):
                if failure is not None and sent == failure.after_chunks:
                    if failure.drop_connection:
                        return drop_connection(request)
                    message = failure.message or "an error was encountered while running the model"
                    await response.write(compact({"error": message}).encode() + b"\n")
                    await response.write_eof()
                    return response
                if sent and plan.chunk_delay:
                    await asyncio.sleep(plan.chunk_delay)
                await response.write(compact(line).encode() + b"\n")
            await response.write_eof()
        except ConnectionResetError:
            self.note_disconnect()
            return response
        self.note_completed()
        return response


if __name__ == "__main__":
    main(FakeOllama, "Ollama")
