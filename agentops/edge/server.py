"""The edge's HTTP connections: bounded in time, and answered in the JSON error shape even when
aiohttp's own HTTP parser refuses a request.

Rules:
- An idle connection, and one whose request headers are not complete, is closed
  `idle_timeout_s` after it opened or after its last answer (aiohttp's keep-alive timer,
  which also runs while the first request's headers arrive).
- A request body that stops arriving (no byte for `body_timeout_s` while the handler still
  waits for more) closes the connection: a slow body cannot hold a handler and a file
  descriptor for ever (slowloris).
- Requests aiohttp itself refuses (bad request line, header or chunk framing, headers too
  large) get `{"error": {code, message, details}}`, not aiohttp's plain text; the connection
  is closed after the answer, as aiohttp does.
- aiohttp's decoding of request bodies is off: the edge decides which content codings it
  takes and decodes them itself (`schemas.py`), so no coding is ever read as identity and no
  coding aiohttp lacks a library for fails in its parser.
- The guards are installed on the app (`install`), so the service's runner and the tests'
  servers both serve through them.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from agentops.edge.errors import HTTP_CODES, error_body

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
            log.info("edge.body_timeout", path=request.path, after_s=self._guard.body_timeout_s)
            self.force_close()
            if self.transport is not None:
                self.transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._last_rx = self._loop.time()
        super().data_received(data)

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
        return server

    app._make_handler = make_handler  # type: ignore[method-assign]
