"""What both upstream doubles share: a real aiohttp server on loopback in its own thread, the
scripted replies, failure injection, latency and the record of what was received.

The server runs on a private event loop in a daemon thread so one fake serves sync tests, async
tests (whose loop must not be blocked by the server) and a gateway running in another process.
Every public method is thread-safe: state is guarded by one lock and handlers hold it only to
take the next reply or failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class FakeToolCall:
    """A tool call the fake model makes. `arguments` is an object, serialized per wire format."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str = ""  # OpenAI call id; generated when empty (Ollama sends none)


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Unset token counts are derived from the request and the reply."""

    content: str = ""
    tool_calls: tuple[FakeToolCall, ...] = ()
    finish_reason: str | None = None  # default: "tool_calls" with tool calls, else "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    model: str | None = None  # the model the upstream says answered; default: the requested one
    # Streamed content exactly in these pieces (one chunk each) instead of one word per chunk;
    # `content` is ignored for streams when set. Lets a test split the text where it wants.
    pieces: tuple[str, ...] = ()


@dataclass(frozen=True)
class Failure:
    """An injected failure for one request.

    status: answer with this HTTP status and the provider's error body.
    drop: close the connection without answering.
    mid_stream: send `after_chunks` chunks, then an error event/line (or drop the connection
    when `drop_connection`); a non-streaming request gets its connection dropped.
    """

    kind: Literal["status", "drop", "mid_stream"]
    status: int = 500
    message: str | None = None
    retry_after: float | None = None
    code: str | None = None
    after_chunks: int = 0
    drop_connection: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or None when the body was empty or not JSON


@dataclass(frozen=True)
class Planned:
    """What a handler must do for one chat request, taken atomically from the script."""

    reply: Reply
    failure: Failure | None
    first_byte_delay: float
    chunk_delay: float


_WORD = re.compile(r"\S+\s*|\s+")


def compact(value: Any) -> str:
    """JSON as the real servers write it (Go and OpenAI's API): no spaces after separators."""
    return json.dumps(value, separators=(",", ":"))


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=compact)


def split_words(text: str) -> list[str]:
    """Content pieces as a model would stream them: one word with its trailing space each."""
    return _WORD.findall(text) or [""]


def count_prompt_tokens(messages: Any) -> int:
    """A deterministic stand-in for a tokenizer: words plus a small per-message overhead."""
    if not isinstance(messages, list):
        return 0
    total = 0
    for message in messages:
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str):
                total += len(content.split())
            total += 3
    return total


def count_completion_tokens(reply: Reply) -> int:
    words = len(reply.content.split())
    calls = sum(1 + len(json.dumps(call.arguments).split()) for call in reply.tool_calls)
    return max(1, words + calls)


class FakeServer:
    """Base class: lifecycle, scripting and recording. Subclasses add the routes."""

    provider = "fake"
    url_suffix = ""
    default_content = "Hello from the fake upstream."

    def __init__(self, *, port: int = 0, models: tuple[str, ...] = ()) -> None:
        self._requested_port = port
        self.models = tuple(models)
        self._lock = threading.Lock()
        self._replies: deque[Reply] = deque()
        self._failures: deque[Failure] = deque()
        self._requests: list[RecordedRequest] = []
        self._disconnects = 0
        self._completed = 0
        self._first_byte_delay = 0.0
        self._chunk_delay = 0.0
        self._responder: Callable[[Any], Reply] | None = None
        self.planning: Any = None  # the body of the chat request being planned
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- lifecycle -------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # reported to the starting thread below
                errors.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-{self.provider}", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start within 10 s")
        if errors:
            self._thread = None
            raise RuntimeError(f"{type(self).__name__} could not start: {errors[0]}")

    async def _serve(self) -> None:
        app = web.Application()
        app.add_routes(self.routes())
        # Cancel handlers when the client goes away: that is how the fake notices that a
        # caller's expired deadline really closed the upstream request.
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, self._requested_port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self._port = server.sockets[0].getsockname()[1]
        self._runner = runner

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The base URL a client is configured with."""
        return f"http://{LOOPBACK}:{self._port}{self.url_suffix}"

    # -- scripting -------------------------------------------------------------------------

    def enqueue(self, *replies: Reply | str) -> None:
        """Answer the next chat requests with these replies, in order."""
        with self._lock:
            for reply in replies:
                self._replies.append(Reply(content=reply) if isinstance(reply, str) else reply)

    def fail_next(
        self,
        status: int,
        *,
        count: int = 1,
        message: str | None = None,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        """The next `count` chat requests get HTTP `status` with the provider's error body."""
        self._add_failures(
            count,
            Failure("status", status=status, message=message, retry_after=retry_after, code=code),
        )

    def drop_next(self, count: int = 1) -> None:
        """The next `count` chat requests get their connection closed without an answer."""
        self._add_failures(count, Failure("drop"))

    def fail_mid_stream(
        self,
        after_chunks: int,
        *,
        count: int = 1,
        message: str | None = None,
        drop_connection: bool = False,
    ) -> None:
        """The next `count` streams break after `after_chunks` content chunks."""
        self._add_failures(
            count,
            Failure(
                "mid_stream",
                after_chunks=after_chunks,
                message=message,
                drop_connection=drop_connection,
            ),
        )

    def _add_failures(self, count: int, failure: Failure) -> None:
        with self._lock:
            self._failures.extend([failure] * count)

    def respond_with(self, responder: Callable[[Any], Reply] | None) -> None:
        """Answer chat requests that have no scripted reply with `responder(body)` (the parsed
        request body), e.g. to echo what the request carried. None: the default reply."""
        with self._lock:
            self._responder = responder

    def set_latency(self, *, first_byte: float = 0.0, between_chunks: float = 0.0) -> None:
        """Delay before the response starts, and between streamed chunks, in seconds."""
        with self._lock:
            self._first_byte_delay = first_byte
            self._chunk_delay = between_chunks

    def reset(self) -> None:
        """Forget scripted replies, failures, latency and everything recorded."""
        with self._lock:
            self._replies.clear()
            self._failures.clear()
            self._requests.clear()
            self._disconnects = 0
            self._completed = 0
            self._first_byte_delay = 0.0
            self._chunk_delay = 0.0
            self._responder = None

    # -- recording -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def bodies(self) -> list[Any]:
        """The parsed JSON bodies of the chat requests received, oldest first."""
        with self._lock:
            return [r.body for r in self._requests if r.method == "POST"]

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def disconnects(self) -> int:
        """Requests whose client went away before the response was complete."""
        with self._lock:
            return self._disconnects

    @property
    def completed(self) -> int:
        """Chat responses sent in full."""
        with self._lock:
            return self._completed

    def wait_for_disconnects(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Disconnects are noticed asynchronously; wait until `count` were seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.disconnects >= count:
                return True
            time.sleep(0.01)
        return self.disconnects >= count

    # -- for handlers (run on the server's loop) -------------------------------------------

    async def record(self, request: web.Request) -> Any:
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        with self._lock:
            self._requests.append(
                RecordedRequest(request.method, request.path, dict(request.headers), body)
            )
        return body

    def plan(self) -> Planned:
        """The next scripted reply and failure. A responder gets the body of the request being
        planned (`self.planning`, set by the handler right before: handlers run on one loop
        and nothing awaits in between)."""
        body = self.planning
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
            if self._replies:
                reply = self._replies.popleft()
            elif self._responder is not None:
                reply = self._responder(body)
            else:
                reply = Reply(self.default_content)
            return Planned(reply, failure, self._first_byte_delay, self._chunk_delay)

    def note_disconnect(self) -> None:
        with self._lock:
            self._disconnects += 1

    def note_completed(self) -> None:
        with self._lock:
            self._completed += 1


def drop_connection(request: web.Request) -> web.StreamResponse:
    """Abort the TCP connection: the client sees a reset, not an HTTP answer."""
    if request.transport is not None:
        request.transport.abort()
    # aiohttp needs a response object; nothing of it can reach the closed socket.
    return web.Response(status=500)


@contextlib.contextmanager
def refused_url(suffix: str = "") -> Iterator[str]:
    """A loopback URL whose port refuses connections.

    The port is bound but never listens, so nothing else can take it while the URL is in use
    and every connect gets ECONNREFUSED at once (a live fake cannot be made to refuse).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((LOOPBACK, 0))
        port = sock.getsockname()[1]
        yield f"http://{LOOPBACK}:{port}{suffix}"
    finally:
        sock.close()


def main(fake_type: Callable[..., FakeServer], name: str) -> None:
    """`python -m tests.fakes.<x>_server`: serve a fake in the foreground until SIGINT or
    SIGTERM (benchmarks, manual tries)."""
    parser = argparse.ArgumentParser(description=f"Serve the fake {name} upstream on loopback.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--first-byte-delay", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--chunk-delay", type=float, default=0.0, metavar="SECONDS")
    args = parser.parse_args()
    fake = fake_type(port=args.port)
    fake.set_latency(first_byte=args.first_byte_delay, between_chunks=args.chunk_delay)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    fake.start()
    print(f"{type(fake).__name__} listening on {fake.url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        fake.stop()
