"""A scriptable local HTTP server for provider fakes: canned replies in order, or a callable.

Rules:
- It binds 127.0.0.1 on a free port and records every request (method, path, headers, JSON
  body), so tests assert what the adapter sent as well as how it read the answer.
- Each request is answered by the next queued `Reply`, else by `responder(request)` (sync or
  async), else 500 "no reply scripted" (a test that forgets a reply fails loudly).
- `Reply.delay_s` holds the answer back (timeouts); `Reply.sse` streams `data:` events (with
  `event: <type>` lines for events that have a type, as Anthropic sends them);
  `Reply.raw` sends bytes that are not JSON.
- Use `async with FakeServer(...)` inside a test's loop, or `with serve_in_thread(server)` when
  the client runs in other processes (e2e): the server then has its own loop and thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    sse: list[Any] | None = None
    sse_done: bool = True  # OpenAI ends a stream with `data: [DONE]`; Anthropic does not
    raw: bytes | None = None


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


Responder = Callable[[Recorded], "Reply | Awaitable[Reply]"]


class FakeServer:
    def __init__(self, responder: Responder | None = None) -> None:
        self.replies: deque[Reply] = deque()
        self.responder = responder
        self.requests: list[Recorded] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._closing = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def queue(self, *replies: Reply) -> FakeServer:
        self.replies.extend(replies)
        return self

    async def start(self) -> FakeServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Held-back replies end at stop(); a short grace keeps cleanup bounded.
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            self._closing.set()
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        recorded = Recorded(request.method, request.path, dict(request.headers), body)
        self.requests.append(recorded)
        if self.replies:
            reply = self.replies.popleft()
        elif self.responder is not None:
            answer = self.responder(recorded)
            reply = await answer if inspect.isawaitable(answer) else answer
        else:
            reply = Reply(status=500, body={"error": {"message": "no reply scripted"}})
        if reply.delay_s:  # hold the answer back, but never past stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), reply.delay_s)
        if reply.sse is not None:
            return await _stream(request, reply)
        if reply.raw is not None:
            return web.Response(status=reply.status, body=reply.raw, headers=reply.headers)
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)


async def _stream(request: web.Request, reply: Reply) -> web.StreamResponse:
    response = web.StreamResponse(
        status=reply.status, headers={"Content-Type": "text/event-stream", **reply.headers}
    )
    await response.prepare(request)
    for event in reply.sse or ():
        data = event if isinstance(event, str) else json.dumps(event)
        name = f"event: {event['type']}\n" if isinstance(event, dict) and "type" in event else ""
        await response.write(f"{name}data: {data}\n\n".encode())
    if reply.sse_done:
        await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


@contextmanager
def serve_in_thread(server: FakeServer) -> Iterator[FakeServer]:
    """Run `server` on its own event loop in a daemon thread until the block ends."""
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="fake-llm-server", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("fake LLM server did not start")
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
