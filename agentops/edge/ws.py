"""`WS /ws`: each client gets the events stream, replayed from `since` and then live.

Rules:
- Live events come from the edge's one feed (`edge/feed.py`), never from a consumer per
  client; a client is a listener of its task, its agent or everything, with its own bounded
  queue of frames serialised once for all.
- `since=N` is replayed by bounded batched direct gets (`bus/direct.py`, `BATCH` at most, no
  consumer) paced by the client: the next batch is asked for once its queue has room again.
  Live frames arriving meanwhile are held (bounded; dropped and started again when full). The
  replay joins the live feed when a batch asked for after the held frames started says
  nothing more is pending: every event is then either replayed or held, and held ones up to
  the last replayed sequence are dropped, so there is no gap and no duplicate. Without
  `since` the client starts at the feed's position. `seq` in every frame is the stream
  sequence, the value to reconnect with.
- A frame with nothing queued before it is written at once, its prebuilt bytes straight to
  the transport (one write per client, no task switch), while the transport holds under
  `WRITE_BUFFER`; otherwise it is queued and the client's pump sends it, waiting for drains.
- Bounds, all closing with 1013 and a reason naming the `since` to reconnect with (the last
  sequence sent): a live frame that would pass `ws_queue_size` frames or `ws_queue_bytes`
  (the transport's write buffer counted too), or a replay the client frees no room for within
  `ws_slow_client_s`. The socket's send buffer is set to `ws_send_buffer`, so the kernel does
  not absorb megabytes for a client that never reads. A close the client does not take
  within `ws_close_timeout_s` cuts the connection.
- The feed lost for good (or a replay that fails) closes with 1011 and the `since` to
  reconnect with; never a silent stop. Query parameters are checked before the upgrade (a bad
  one is a JSON 400), and a feed that is down is a 503 before the upgrade too.
- Client → server: `{"type": "ping"}` gets `{"type": "pong"}`. Invalid JSON, a shapeless
  frame or an unknown type gets an error frame, and after `ws_max_bad_frames` of them the
  connection is closed with 1008. A binary frame gets an error frame and 1003; a frame over
  `MAX_CLIENT_FRAME` bytes or nested too deep gets one and 1009 (aiohttp itself closes with
  1009, without an error frame, past `MAX_WIRE_FRAME`).
- An event that does not decode is logged and skipped; it never ends the stream.
- Permessage-deflate is off (it doubles CPU per frame and costs ~128 KB per client).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from agentops.bus.direct import BATCH, BATCH_BYTES, next_by_subject
from agentops.edge.apispec import INVALID_QUERY, Param, Resp, id_param, operation
from agentops.edge.auth import ws_answer
from agentops.edge.context import BUS, CONFIG, EdgeConfig
from agentops.edge.errors import ApiError
from agentops.edge.feed import EventFeed, Frame, decode_frame
from agentops.edge.metrics import METRICS, EdgeMetrics
from agentops.edge.schemas import query_id, query_optional_int
from agentops.protocol import subjects as s

log = structlog.get_logger(__name__)

MAX_CLIENT_FRAME = 64 * 1024
MAX_WIRE_FRAME = 1024 * 1024
MAX_SINCE = 2**63 - 2
CLOSE_TRY_AGAIN_LATER = 1013
WRITE_BUFFER = 64 * 1024  # what the fast path lets wait in the transport (asyncio's high water)


@dataclass
class WsClients:
    """Open WebSockets (closed with 1001 at shutdown) and the edge's one events feed."""

    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    feed: EventFeed | None = None

    async def close_all(self) -> None:
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")


WS_CLIENTS = web.AppKey("ws_clients", WsClients)


def setup(app: web.Application) -> None:
    """The feed starts with the app and stops after the sockets are closed."""
    clients = app[WS_CLIENTS] = WsClients()

    async def start(app: web.Application) -> None:
        bus, config = app[BUS], app[CONFIG]
        clients.feed = EventFeed(bus.nc, bus.js, config.ws_feed_grace_s, config.ws_feed_idle_s)
        await clients.feed.start()

    async def stop(app: web.Application) -> None:
        await clients.close_all()
        if clients.feed is not None:
            await clients.feed.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)


def error_frame(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"code": code, "message": message}}


def client_reply(kind: WSMsgType, data: Any) -> tuple[dict[str, Any], int | None, bool]:
    """The answer to one client frame, the close code it calls for (if any), and whether the
    frame was valid."""
    if kind is not WSMsgType.TEXT:
        reply = error_frame("unsupported_frame", "only JSON text frames are accepted")
        return reply, WSCloseCode.UNSUPPORTED_DATA, False
    if len(data) > MAX_CLIENT_FRAME:
        reply = error_frame("frame_too_big", f"frames are limited to {MAX_CLIENT_FRAME} bytes")
        return reply, WSCloseCode.MESSAGE_TOO_BIG, False
    try:
        doc = json.loads(data)
    except RecursionError:
        return error_frame("frame_too_deep", "frame is nested too deeply"), 1009, False
    except ValueError:
        return error_frame("invalid_json", "frame is not valid JSON"), None, False
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        return error_frame("invalid_frame", 'expected an object with a "type"'), None, False
    if doc["type"] == "ping":
        return {"type": "pong"}, None, True
    return error_frame("unknown_type", f"unknown frame type {doc['type'][:64]!r}"), None, False


class ClientFeed:
    """One client: a listener of the feed, its bounded queue, its pump and its replay."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        metrics: EdgeMetrics,
        task_id: str | None,
        agent_id: str | None,
    ) -> None:
        self.ws, self.request, self.metrics = ws, request, metrics
        self.config: EdgeConfig = request.app[CONFIG]
        self.task_id, self.agent_id = task_id, agent_id
        self.delays = metrics.ws_delay["task" if task_id else "agent" if agent_id else "all"]
        self.connected_at = time.time()  # frames of events stamped since are timed
        self.start = 0  # the sequence this client's stream starts after
        self.last_sent: int | None = None
        self.frames: deque[Frame] = deque()
        self.queued_bytes = 0
        self.live = False
        self.held: list[Frame] = []
        self.held_epoch = 0  # bumped when held frames are dropped (the replay goes on further)
        self.ending: tuple[int, str, int | None] | None = None  # code, reason, since
        self._ended = asyncio.Event()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._pumping = False  # the pump holds a frame: later ones queue behind it

    # ---- called by the feed (never blocks) ----
    def offer(self, frame: Frame) -> None:
        if self.ending is not None:
            return
        if self.agent_id and frame.agent_id != self.agent_id:
            return  # registered by task, filtered by agent too
        if not self.live:
            if len(self.held) >= self.config.ws_queue_size:
                self.held.clear()
                self.held_epoch += 1
            self.held.append(frame)
            return
        if self._over_bound(len(frame.data)):
            self.end(CLOSE_TRY_AGAIN_LATER, "slow", "client too slow")
            return
        self._enqueue(frame)

    def lost(self, reason: str, since: int | None = None) -> None:
        self.end(WSCloseCode.INTERNAL_ERROR, "feed_lost", reason, since)

    # ---- the queue ----
    def _buffered(self) -> int:
        transport = self.request.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def _over_bound(self, extra: int) -> bool:
        if len(self.frames) >= self.config.ws_queue_size:
            return True
        return self.queued_bytes + self._buffered() + extra > self.config.ws_queue_bytes

    def _has_room(self) -> bool:
        return (
            len(self.frames) <= self.config.ws_queue_size // 2
            and self.queued_bytes + self._buffered() <= self.config.ws_queue_bytes // 2
        )

    def _enqueue(self, frame: Frame) -> None:
        if not self.frames and not self._pumping and self._write_now(frame):
            return
        self.frames.append(frame)
        self.queued_bytes += len(frame.data)
        self._wake.set()

    def _write_now(self, frame: Frame) -> bool:
        """The fast path: nothing waits before this frame and the transport takes it without
        growing past `WRITE_BUFFER`, so its prebuilt bytes are written here and now (one write
        per client, no task switch); otherwise the pump sends it and waits for the drain."""
        transport = self.request.transport
        if transport is None or transport.is_closing() or self.ws.closed:
            return False
        if transport.get_write_buffer_size() > WRITE_BUFFER or self._send_lock.locked():
            return False
        transport.write(frame.wire)
        self.last_sent = frame.seq
        self.metrics.ws_events_sent += 1
        self._timed(frame)
        return True

    def _timed(self, frame: Frame) -> None:
        if frame.ts >= self.connected_at:
            self.delays.observe(max(0.0, time.time() - frame.ts))

    def resume_from(self) -> int:
        return self.last_sent if self.last_sent is not None else self.start

    def end(self, code: int, kind: str, reason: str, since: int | None = None) -> None:
        """Close with `code`, naming the `since` to reconnect with (given, or ours once the
        pump has stopped: a frame it was sending when this was called may still go out)."""
        if self.ending is not None:
            return
        self.ending = (code, reason, since)
        self.metrics.ws_disconnects[kind] += 1
        self._ended.set()

    async def _close_ending(self) -> None:
        assert self.ending is not None
        code, reason, since = self.ending
        since = self.resume_from() if since is None else since
        log.info("ws.client_closed", code=code, reason=reason, since=since)
        await self._close(code, f"{reason}: reconnect with since={since}")

    # ---- replay, then live ----
    async def replay(self, feed: EventFeed, since: int | None) -> None:
        """Replay after `since` in bounded batches, then join the live feed (module rules)."""
        feed.add(self)
        if since is None:
            self.start = feed.last_seq
            self.live = True
            return
        self.start = cursor = since
        bus = self.request.app[BUS]
        filt = s.events_filter(self.task_id, self.agent_id)
        size = max(1, min(BATCH, self.config.ws_queue_size // 2))
        max_bytes = min(BATCH_BYTES, self.config.ws_queue_bytes // 2)
        while self.ending is None:
            await self._wait_room()
            epoch = self.held_epoch
            found, pending = await next_by_subject(
                bus.nc, bus.js, s.EVENTS_STREAM, filt, cursor + 1, size, max_bytes
            )
            for stored in found:
                cursor = stored.sequence
                frame = decode_frame(stored.sequence, stored.subject, stored.data)
                if frame is not None:
                    self._enqueue(frame)
            if not pending and epoch == self.held_epoch:
                for frame in self.held:
                    if frame.seq > cursor:
                        self._enqueue(frame)
                self.held, self.live = [], True
                return

    async def _wait_room(self) -> None:
        while not self._has_room():
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), self.config.ws_slow_client_s)
            except TimeoutError:
                self.end(CLOSE_TRY_AGAIN_LATER, "slow", "client too slow")
                return

    # ---- sending ----
    async def send(self, payload: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.ws.send_str(json.dumps(payload, separators=(",", ":")))

    async def _pump(self) -> None:
        while True:
            while not self.frames:
                self._wake.clear()
                await self._wake.wait()
            frame = self.frames.popleft()
            self.queued_bytes -= len(frame.data)
            self._pumping = True
            try:
                async with self._send_lock:
                    # Without compression aiohttp writes the whole frame before its first
                    # await (the drain): a frame whose send is cancelled there was still sent.
                    self.last_sent = frame.seq
                    await self.ws.send_frame(frame.data, WSMsgType.TEXT)
            finally:
                self._pumping = bool(self.frames)
            self.metrics.ws_events_sent += 1
            self._timed(frame)
            if self._has_room():
                self._room.set()

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(
                self.ws.close(code=code, message=reason.encode()[:120]),
                self.config.ws_close_timeout_s,
            )
        except (TimeoutError, ConnectionError, RuntimeError):
            if self.request.transport is not None:
                self.request.transport.abort()

    async def _guard(self, pump: asyncio.Task[None], replay: asyncio.Task[None]) -> None:
        ended = asyncio.create_task(self._ended.wait())
        watched = {pump, ended, replay}
        try:
            while not (pump.done() or ended.done()):
                done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                if replay in done:
                    watched.discard(replay)
                    if not replay.cancelled() and replay.exception() is not None:
                        log.warning("ws.replay_failed", error=repr(replay.exception()))
                        self.end(WSCloseCode.INTERNAL_ERROR, "replay_failed", "replay failed")
        finally:
            ended.cancel()
        if self.ending is not None:
            pump.cancel()
            await asyncio.wait({pump})
            await self._close_ending()
        elif not pump.cancelled() and pump.exception() is not None:
            log.warning("ws.send_failed", error=repr(pump.exception()))
            await self._close(WSCloseCode.INTERNAL_ERROR, "send failed")

    async def _read(self) -> None:
        bad = 0
        async for msg in self.ws:
            if msg.type is WSMsgType.ERROR:
                break
            reply, close_code, ok = client_reply(msg.type, msg.data)
            await self.send(reply)
            if close_code is not None:
                kind = "unsupported" if close_code == WSCloseCode.UNSUPPORTED_DATA else "too_big"
                self.metrics.ws_disconnects[kind] += 1
                await self.ws.close(code=close_code, message=reply["error"]["code"].encode())
                break
            bad += 0 if ok else 1
            if bad >= self.config.ws_max_bad_frames:
                self.metrics.ws_disconnects["bad_frames"] += 1
                await self.ws.close(
                    code=WSCloseCode.POLICY_VIOLATION, message=b"too many invalid frames"
                )
                break

    async def run(self, feed: EventFeed, since: int | None) -> None:
        pump = asyncio.create_task(self._pump())
        replay = asyncio.create_task(self.replay(feed, since))
        guard = asyncio.create_task(self._guard(pump, replay))
        try:
            await self._read()
        except (ConnectionError, RuntimeError) as exc:  # the client went away mid-send
            log.info("ws.client_gone", error=repr(exc))
        finally:
            feed.remove(self)
            for task in (guard, replay, pump):
                task.cancel()
            await asyncio.gather(guard, replay, pump, return_exceptions=True)


def limit_send_buffer(request: web.Request, size: int) -> None:
    """A small SO_SNDBUF: what a client does not read stays in our bounded queue."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


@operation(
    "Events over a WebSocket", "events",
    {101: Resp("switching to the WebSocket: frames `{seq, type, ts, task_id, agent_id, data}`; "
               'send `{"type": "ping"}` for a pong')},
    {400: f"not a WebSocket upgrade (`websocket_required`), or {INVALID_QUERY}",
     503: "the events feed is down (`unavailable`): retry later"},
    params=(
        Param("since", {"type": "integer", "minimum": 0, "maximum": MAX_SINCE},
              "replay every event after this stream sequence, then go on live"),
        id_param("task_id", "only this task's events"),
        id_param("agent_id", "only this agent's events"),
        Param("token", {"type": "string"}, "the API token (browsers cannot set headers on a "
              "WebSocket handshake)"),
    ),
    description="Without `since`, new events only. A client too slow to read is closed with "
    "1013, a lost events feed closes with 1011, each with a reason naming the `since` to "
    "reconnect with. A binary frame closes with 1003, one too big or too deep with 1009 (an "
    "error frame first).",
)  # fmt: skip
async def websocket(request: web.Request) -> web.StreamResponse:
    app = request.app
    config = app[CONFIG]
    since = query_optional_int(request, "since", 0, MAX_SINCE)
    task_id, agent_id = query_id(request, "task_id"), query_id(request, "agent_id")
    ws = web.WebSocketResponse(
        compress=False, heartbeat=config.ws_heartbeat_s, max_msg_size=MAX_WIRE_FRAME,
        protocols=ws_answer(request),  # `agentops`, or a `bearer.<token>` offered alone
    )  # fmt: skip
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "websocket_required", "this endpoint needs a WebSocket upgrade")
    clients = app[WS_CLIENTS]
    feed = clients.feed
    if feed is not None:
        await feed.wake()
    if feed is None or not feed.up or feed.idle:
        raise ApiError(503, "unavailable", "the events feed is down, retry later")
    client = ClientFeed(ws, request, app[METRICS], task_id, agent_id)
    await ws.prepare(request)
    limit_send_buffer(request, config.ws_send_buffer)
    clients.sockets.add(ws)
    app[METRICS].ws_clients += 1
    try:
        await client.run(feed, since)
    finally:
        app[METRICS].ws_clients -= 1
        clients.sockets.discard(ws)
        if not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()
    return ws
