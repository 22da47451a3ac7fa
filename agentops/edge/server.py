"""The edge's HTTP connections: bounded in time, and answered in the JSON error shape even when
aiohttp's own HTTP parser refuses a request.

Rules:
- An idle connection, and one whose request headers are not complete, is closed
  `idle_timeout_s` after it opened or after its last answer (aiohttp's keep-alive timer,
  which also runs while the first request's headers arrive).
- A request body that stops arriving (no byte for `body_timeout_s` while the handler still
  waits for more) is answered 408 and its connection closed; one whose handler does not
  answer within another `body_timeout_s` is cut: a slow body cannot hold a handler and a
  file descriptor for ever (slowloris).
- A client that stops sending (half-close, EOF) mid-body gets its request answered (the
  body is unreadable: 400), then the connection is closed; aiohttp alone would close it
  without a word. With nothing to answer, the connection is closed as before.
- Requests aiohttp itself refuses (bad request line, header or chunk framing, headers too
  large) get `{"error": {code, message, details}}`, not aiohttp's plain text; the connection
  is closed after the answer, as aiohttp does. So do aiohttp's refusals outside the
  middlewares (an `Expect` it does not know: 417).
- aiohttp's decoding of request bodies is off: the edge decides which content codings it
  takes and decodes them itself (`schemas.py`), so no coding is ever read as identity and no
  coding aiohttp lacks a library for fails in its parser.
- The guards are installed on the app (`install`), so the service's runner and the tests'
  servers both serve through them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from agentops.edge.errors import HTTP_CODES, BodyTimeout, error_body, from_http_exception

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Guard:
    idle_timeout_s: float
    body_timeout_s: float


class GuardedHandler(RequestHandler):
    """aiohttp's connection handler with a body-read timeout and JSON parser errors."""

    _last_rx = 0.0
    _guard: Guard | None = None
    _guard_timer: asyncio.TimerHandle | None = None
    _timed_out: BaseRequest | None = None  # the request told its body timed out
    _parsed = 0  # requests parsed on this connection...
    _answered = 0  # ...and answered
    _receiving: StreamReader | None = None  # the body of the last request parsed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._last_rx = self._loop.time()
        self._guard = getattr(self._manager, "agentops_guard", None)
        self._arm()

    def _arm(self) -> None:
        if self._guard is not None:
            period = max(0.05, self._guard.body_timeout_s / 4)
            self._guard_timer = self._loop.call_later(period, self._check_body)

    def _check_body(self) -> None:
        self._guard_timer = None
        if self._force_close or self._close or self._guard is None:
            return
        request = self._current_request
        stalled = self._loop.time() - self._last_rx > self._guard.body_timeout_s
        if request is not None and not request.content.is_eof() and stalled:
            if request is self._timed_out:  # told, and still no answer: cut it off
                self.force_close()
                if self.transport is not None:
                    self.transport.close()
                return
            after = self._guard.body_timeout_s
            log.info("edge.body_timeout", path=request.path, after_s=after)
            self._timed_out = request
            self._last_rx = self._loop.time()  # the handler's time to answer
            self._lingering_time = 0.0  # the rest of that body is not waited for
            request.content.set_exception(
                BodyTimeout(f"no byte of the request body for {after:g} s: request cut off")
            )
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._last_rx = self._loop.time()
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) > queued:  # requests parsed: the last one's body is arriving
            self._parsed += len(self._messages) - queued
            self._receiving = self._messages[-1][1]

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio's signature
        """The client stopped sending: answer the requests it sent (a body it cut short is
        unreadable), then close. Nothing left to answer (or a WebSocket): close now."""
        if self._upgraded or self._force_close or self._answered >= self._parsed:
            return None
        receiving = self._receiving
        if receiving is not None and not receiving.is_eof():
            receiving.set_exception(RequestPayloadError("the client closed its side mid-body"))
        self._lingering_time = 0.0  # nothing more will arrive to be read and dropped
        self.close()  # once the handlers are done
        return True  # keep the transport open to write the answer

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answered += 1

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._guard_timer is not None:
            self._guard_timer.cancel()
            self._guard_timer = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's own refusals (the parser's 400s, 413, 431) in the JSON error shape."""
        if request.writer.output_size > 0:  # an answer already started: the connection is broken
            raise ConnectionError("response already started; cannot send an error")
        if status >= 500:
            log.error("edge.protocol_error", status=status, error=repr(exc))
            text = "internal server error"
        else:
            log.info("edge.bad_http", status=status, error=message or repr(exc))
            text = message or "malformed HTTP request"
        code = HTTP_CODES.get(status, "bad_request" if status < 500 else "internal")
        body = json.dumps(error_body(code, text)).encode()
        resp = web.Response(status=status, body=body, content_type="application/json")
        resp.force_close()
        return resp


class GuardedServer(Server):
    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, **self._kwargs)


def install(app: web.Application, guard: Guard) -> None:
    """Serve `app` through `GuardedHandler` whichever runner serves it."""
    make = app._make_handler

    def make_handler(**kwargs: Any) -> Server:
        kwargs.setdefault("keepalive_timeout", guard.idle_timeout_s)
        kwargs["auto_decompress"] = False  # bodies are decoded by the edge (`schemas.py`)
        server = make(**kwargs)
        server.__class__ = GuardedServer
        server.agentops_guard = guard  # type: ignore[attr-defined]
        server.request_handler = json_refusals(server.request_handler)
        return server

    app._make_handler = make_handler  # type: ignore[method-assign]


def json_refusals(
    handle: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
) -> Callable[[BaseRequest], Awaitable[web.StreamResponse]]:
    """The app's handler, with aiohttp's refusals raised outside the middlewares (the
    `Expect` check runs before them) answered in the JSON error shape."""

    async def guarded(request: BaseRequest) -> web.StreamResponse:
        try:
            return await handle(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return from_http_exception(exc)

    return guarded
