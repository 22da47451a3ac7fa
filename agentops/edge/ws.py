"""`WS /ws`: each client gets the events stream, replayed from `since` and then live.

Rules:
- One ordered consumer per client on the events stream, filtered by `task_id` / `agent_id`.
  With `since=N` it starts at stream sequence N+1, otherwise at new events only. An ordered
  consumer delivers in stream order and re-creates itself after a gap, so replay then live
  has no gap and no duplicate; `seq` in every frame is the stream sequence, the value to
  reconnect with.
- Query parameters are checked before the upgrade (a bad one is a JSON 400), and NATS being
  away is a 503 before the upgrade too.
- Frames leave through one bounded queue per client, written by one pump task. When the
  queue stays full for `ws_slow_client_s` the client is too slow: it is closed with 1013 and
  a reason naming the `since=` to reconnect with (the last sequence it was sent).
- Client → server: `{"type": "ping"}` gets `{"type": "pong"}`; anything else gets an error
  frame, and after `ws_max_bad_frames` of them the connection is closed with 1008.
- An event that does not decode is logged and skipped; it never ends the stream.
- Permessage-deflate is off (it doubles CPU per frame and costs ~128 KB per client).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from agentops.edge.apispec import INVALID_QUERY, Param, Resp, id_param, operation
from agentops.edge.auth import ws_answer
from agentops.edge.context import BUS, CONFIG, EdgeConfig
from agentops.edge.errors import ApiError
from agentops.edge.metrics import METRICS, EdgeMetrics
from agentops.edge.schemas import query_id, query_optional_int
from agentops.protocol import subjects as s
from agentops.protocol.messages import EVENT_ADAPTER

log = structlog.get_logger(__name__)

MAX_CLIENT_FRAME = 64 * 1024
MAX_SINCE = 2**63 - 2
CLOSE_TRY_AGAIN_LATER = 1013


@dataclass
class WsClients:
    """Open WebSockets, so shutdown can close them with 1001 instead of cutting them off."""

    sockets: set[web.WebSocketResponse] = field(default_factory=set)

    async def close_all(self) -> None:
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")


WS_CLIENTS = web.AppKey("ws_clients", WsClients)


def event_frame(msg: Msg) -> dict[str, Any] | None:
    try:
        event = EVENT_ADAPTER.validate_json(msg.data)
    except ValidationError as exc:
        log.warning("ws.undecodable_event", subject=msg.subject, error=str(exc))
        return None
    body = event.model_dump(mode="json")
    return {
        "seq": msg.metadata.sequence.stream,
        "type": body["type"],
        "ts": body["ts"],
        "task_id": body["task_id"],
        "agent_id": body["agent_id"],
        "data": body["data"],
    }


def error_frame(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"code": code, "message": message}}


def client_reply(kind: WSMsgType, data: Any) -> tuple[dict[str, Any], bool]:
    """The answer to one client frame, and whether the frame was valid."""
    if kind is not WSMsgType.TEXT:
        return error_frame("unsupported_frame", "only JSON text frames are accepted"), False
    try:
        doc = json.loads(data)
    except ValueError:
        return error_frame("invalid_json", "frame is not valid JSON"), False
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        return error_frame("invalid_frame", 'expected an object with a "type"'), False
    if doc["type"] == "ping":
        return {"type": "pong"}, True
    return error_frame("unknown_type", f"unknown frame type {doc['type'][:64]!r}"), False


class ClientFeed:
    """One client's frames: queued by the NATS callback, written by the pump."""

    def __init__(
        self, ws: web.WebSocketResponse, config: EdgeConfig, metrics: EdgeMetrics, since: int | None
    ) -> None:
        self.ws = ws
        self.config = config
        self.metrics = metrics
        self.since = since
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(config.ws_queue_size)
        self.last_sent: int | None = None
        self.first_queued: int | None = None
        self.overflow = asyncio.Event()
        self._send_lock = asyncio.Lock()

    async def on_event(self, msg: Msg) -> None:
        if self.overflow.is_set():
            return
        frame = event_frame(msg)
        if frame is None:
            return
        if self.first_queued is None:
            self.first_queued = frame["seq"]
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            # Blocking here holds back the consumer's flow control, so a replay to a fast
            # client just waits; only a client that drains nothing for a while is cut off.
            try:
                await asyncio.wait_for(self.queue.put(frame), self.config.ws_slow_client_s)
            except TimeoutError:
                self.overflow.set()

    def resume_from(self) -> int:
        if self.last_sent is not None:
            return self.last_sent
        if self.since is not None:
            return self.since
        return max((self.first_queued or 1) - 1, 0)

    async def send(self, payload: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.ws.send_str(json.dumps(payload, separators=(",", ":")))

    async def _pump(self) -> None:
        while True:
            frame = await self.queue.get()
            async with self._send_lock:
                # Without compression aiohttp writes the whole frame before its first await
                # (the drain), so a frame whose send is cancelled in the drain was still sent.
                self.last_sent = frame["seq"]
                await self.ws.send_str(json.dumps(frame, separators=(",", ":")))
            self.metrics.ws_events_sent += 1

    async def _guard(self, pump: asyncio.Task[None]) -> None:
        overflow = asyncio.create_task(self.overflow.wait())
        try:
            await asyncio.wait({pump, overflow}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            overflow.cancel()
        if self.overflow.is_set():
            pump.cancel()
            await asyncio.wait({pump})
            self.metrics.ws_disconnects["slow"] += 1
            reason = f"client too slow: reconnect with since={self.resume_from()}"
            log.info("ws.slow_client", since=self.resume_from())
            await self.ws.close(code=CLOSE_TRY_AGAIN_LATER, message=reason.encode())
        elif not pump.cancelled() and pump.exception() is not None:
            log.warning("ws.send_failed", error=repr(pump.exception()))
            await self.ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"send failed")

    async def _read(self) -> None:
        bad = 0
        async for msg in self.ws:
            if msg.type is WSMsgType.ERROR:
                break
            reply, ok = client_reply(msg.type, msg.data)
            await self.send(reply)
            bad += 0 if ok else 1
            if bad >= self.config.ws_max_bad_frames:
                self.metrics.ws_disconnects["bad_frames"] += 1
                await self.ws.close(
                    code=WSCloseCode.POLICY_VIOLATION, message=b"too many invalid frames"
                )
                break

    async def run(self) -> None:
        pump = asyncio.create_task(self._pump())
        guard = asyncio.create_task(self._guard(pump))
        try:
            await self._read()
        except (ConnectionError, RuntimeError) as exc:  # the client went away mid-send
            log.info("ws.client_gone", error=repr(exc))
        finally:
            for task in (guard, pump):
                task.cancel()
            await asyncio.gather(guard, pump, return_exceptions=True)


async def _subscribe(
    js: JetStreamContext, feed: ClientFeed, task_id: str | None, agent_id: str | None
) -> JetStreamContext.PushSubscription:
    if feed.since is None:
        policy, config = DeliverPolicy.NEW, ConsumerConfig()
    else:
        policy = DeliverPolicy.BY_START_SEQUENCE
        config = ConsumerConfig(opt_start_seq=feed.since + 1)
    return await js.subscribe(
        s.events_filter(task_id, agent_id),
        stream=s.EVENTS_STREAM,
        cb=feed.on_event,
        ordered_consumer=True,
        deliver_policy=policy,
        config=config,
    )


@operation(
    "Events over a WebSocket", "events",
    {101: Resp("switching to the WebSocket: frames `{seq, type, ts, task_id, agent_id, data}`; "
               'send `{"type": "ping"}` for a pong')},
    {400: f"not a WebSocket upgrade (`websocket_required`), or {INVALID_QUERY}"},
    params=(
        Param("since", {"type": "integer", "minimum": 0, "maximum": MAX_SINCE},
              "replay every event after this stream sequence, then go on live"),
        id_param("task_id", "only this task's events"),
        id_param("agent_id", "only this agent's events"),
        Param("token", {"type": "string"}, "the API token (browsers cannot set headers on a "
              "WebSocket handshake)"),
    ),
    description="Without `since`, new events only. A client too slow to read is closed with "
    "1013 and a reason naming the `since` to reconnect with.",
)  # fmt: skip
async def websocket(request: web.Request) -> web.StreamResponse:
    app = request.app
    config = app[CONFIG]
    since = query_optional_int(request, "since", 0, MAX_SINCE)
    task_id, agent_id = query_id(request, "task_id"), query_id(request, "agent_id")
    ws = web.WebSocketResponse(
        compress=False, heartbeat=config.ws_heartbeat_s, max_msg_size=MAX_CLIENT_FRAME,
        protocols=ws_answer(request),  # `agentops`, or a `bearer.<token>` offered alone
    )  # fmt: skip
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "websocket_required", "this endpoint needs a WebSocket upgrade")
    feed = ClientFeed(ws, config, app[METRICS], since)
    sub = await _subscribe(app[BUS].js, feed, task_id, agent_id)
    clients = app[WS_CLIENTS]
    try:
        await ws.prepare(request)
        clients.sockets.add(ws)
        app[METRICS].ws_clients += 1
        try:
            await feed.run()
        finally:
            app[METRICS].ws_clients -= 1
            clients.sockets.discard(ws)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        if not ws.closed and ws.prepared:
            with contextlib.suppress(Exception):
                await ws.close()
    return ws
