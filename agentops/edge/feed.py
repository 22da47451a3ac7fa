"""The edge's one feed of the events stream, handed out in-process to every WebSocket client.

Rules:
- One consumer of the events stream per edge process, never one per client: an ephemeral push
  consumer (ack none, flow control, idle heartbeats, memory storage, R1) on every event
  subject, delivered to a subscription under the edge's inbox prefix whose pending limits are
  bounded (`FEED_PENDING_MSGS`, `FEED_PENDING_BYTES`). The callback never awaits anything but
  a flow-control reply, so the server holds at most one flow-control window for the edge and
  its connection never becomes a slow consumer; a message nats-py drops at the limit is a
  consumer-sequence gap, and a gap re-creates the consumer where it stopped.
- Each event is decoded and serialised and framed once (`Frame.wire`) and offered to the listeners of its
  task, of its agent and of everything. `offer` never blocks: each client has its own bound.
- The consumer always starts at a stream sequence (the stream's last one + 1 at first), and is
  re-created from the last sequence seen + 1 (no gap, no duplicate) on a consumer-sequence
  gap, a heartbeat saying one was missed, a status it does not expect, or heartbeats missing
  for `HEARTBEAT_MISSES` intervals (a restarted nats-server forgets memory consumers).
- No listener, no consumer: the feed starts idle and goes idle again `idle_s` after its last
  listener left (its consumer deleted), so an edge nobody follows costs a step nothing. A
  client wakes it (`wake`) before it is added; the consumer then starts at the stream's end
  (a listener asks for older events with `since`, served by its replay). A listener added
  while the feed was going idle turns it on again from where it stopped (no gap).
- Never a silent stop: while the consumer cannot be re-created the feed is down (a new
  client waits up to `WAKE_WAIT_S` for it, then gets 503), and once it has been down for `ws_feed_grace_s` every listener is told
  `lost(...)` (its socket is closed with 1011 and the `since` to reconnect with). A stream whose
  last sequence went backwards (deleted and declared again) loses every listener at once:
  their sequences name nothing in the new stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from agentops.bus.connection import cancel_and_wait
from agentops.protocol import subjects as s
from agentops.protocol.messages import EVENT_ADAPTER

log = structlog.get_logger(__name__)

HEARTBEAT_S = 2.0
HEARTBEAT_MISSES = 3
FEED_PENDING_MSGS = 20_000
FEED_PENDING_BYTES = 32 * 1024 * 1024
INACTIVE_S = 30.0  # the server drops a consumer nobody listens to after this long
IDLE_S = 30.0  # the consumer is deleted this long after the last listener left
WAKE_WAIT_S = 5.0
STOP_WAIT_S = 2.0
RETRY_S = (0.2, 0.5, 1.0, 2.0)


@dataclass(frozen=True, slots=True)
class Frame:
    """One event as every client receives it, serialised and encoded once."""

    seq: int
    task_id: str
    agent_id: str | None
    data: bytes  # the UTF-8 text of the frame
    wire: bytes  # the whole WebSocket text frame (a server's frames are not masked)
    ts: float  # the event's time stamp (its emitter's clock), seconds since the epoch


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked WebSocket text frame (RFC 6455 §5.2) carrying `payload`."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 1 << 16:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload


def decode_frame(seq: int, subject: str, data: bytes) -> Frame | None:
    """The client frame of a stored event, or None (logged) for one that does not decode."""
    try:
        event = EVENT_ADAPTER.validate_json(data)
    except ValidationError as exc:
        log.warning("ws.undecodable_event", subject=subject, seq=seq, error=str(exc))
        return None
    body = event.model_dump(mode="json")
    frame = {
        "seq": seq,
        "type": body["type"],
        "ts": body["ts"],
        "task_id": body["task_id"],
        "agent_id": body["agent_id"],
        "data": body["data"],
    }
    data = json.dumps(frame, separators=(",", ":")).encode()
    return Frame(seq, event.task_id, event.agent_id, data, text_frame(data), event.ts.timestamp())


class Listener(Protocol):
    task_id: str | None
    agent_id: str | None

    def offer(self, frame: Frame) -> None: ...

    def lost(self, reason: str, since: int | None = None) -> None: ...


class FeedDown(Exception):
    """The feed cannot be (re-)established now."""


class EventFeed:
    """One edge's consumer of the events stream and its listeners."""

    def __init__(
        self, nc: Client, js: JetStreamContext, grace_s: float, idle_s: float = IDLE_S
    ) -> None:
        self.nc, self.js, self.grace_s, self.idle_s = nc, js, grace_s, idle_s
        self.last_seq = 0  # the last stream sequence handed out (or skipped: undecodable)
        self.resets = 0
        self._all: set[Listener] = set()
        self._by_task: dict[str, set[Listener]] = {}
        self._by_agent: dict[str, set[Listener]] = {}
        self._count = 0  # listeners
        self._empty_since: float | None = time.monotonic()
        self._idle = True
        self._wanted = asyncio.Event()
        self._consumer: str | None = None
        self._sub: Subscription | None = None
        self._dseq = 0
        self._seen = 0.0  # monotonic time of the last message or heartbeat
        self._up = False
        self._down_since: float | None = None
        self._trouble = asyncio.Event()
        self._live = asyncio.Event()  # set while the consumer is established
        self._task: asyncio.Task[None] | None = None

    # ---- listeners ----
    @property
    def up(self) -> bool:
        """Able to serve: its consumer established, or idle (nobody follows; `wake` starts it)."""
        return self._up or self._idle

    @property
    def idle(self) -> bool:
        return self._idle

    async def wake(self, wait_s: float = WAKE_WAIT_S) -> None:
        """Before a listener is added: wake an idle feed, and give one being re-established
        (a node lost, NATS restarting) a moment; bounded: `up` and `idle` say how it went."""
        if self._idle:
            self._wanted.set()
        if not self._up:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._live.wait(), wait_s)

    def add(self, listener: Listener) -> None:
        index = self._index(listener)
        if listener not in index:
            index.add(listener)
            self._count += 1
            self._empty_since = None
            if self._idle:  # it went idle after this client woke it: on again, no gap
                self._wanted.set()

    def remove(self, listener: Listener) -> None:
        index = self._index(listener)
        if listener in index:
            index.discard(listener)
            self._count -= 1
            if not self._count:
                self._empty_since = time.monotonic()
        if not index and index is not self._all:
            key = listener.task_id or listener.agent_id or ""
            table = self._by_task if listener.task_id else self._by_agent
            table.pop(key, None)

    def _index(self, listener: Listener) -> set[Listener]:
        if listener.task_id:
            return self._by_task.setdefault(listener.task_id, set())
        if listener.agent_id:
            return self._by_agent.setdefault(listener.agent_id, set())
        return self._all

    def listeners(self) -> list[Listener]:
        out = list(self._all)
        for table in (self._by_task, self._by_agent):
            for group in table.values():
                out.extend(group)
        return out

    def _dispatch(self, frame: Frame) -> None:
        groups: Iterable[set[Listener]] = (
            self._all,
            self._by_task.get(frame.task_id, ()),  # type: ignore[arg-type]
            self._by_agent.get(frame.agent_id or "", ()),  # type: ignore[arg-type]
        )
        for group in groups:
            for listener in tuple(group):
                try:
                    listener.offer(frame)
                except Exception:  # one client's failure never stops the others' feed
                    log.exception("ws.offer_failed")

    def _lose_all(self, reason: str, since: int | None = None) -> None:
        for listener in self.listeners():
            self.remove(listener)
            with contextlib.suppress(Exception):
                listener.lost(reason, since)

    # ---- lifecycle ----
    async def start(self) -> None:
        """Start the feed, idle until a client wakes it."""
        self._task = asyncio.create_task(self._run(), name="ws-feed")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task, STOP_WAIT_S)
        await self._drop_sub()

    async def _run(self) -> None:
        attempt = 0
        while True:
            if self._idle:
                await self._wanted.wait()
            try:
                await self._establish()
            except Exception as exc:  # NATS away, stream missing, a timeout: try again
                self._went_down(repr(exc))
                await asyncio.sleep(RETRY_S[min(attempt, len(RETRY_S) - 1)])
                attempt += 1
                continue
            attempt = 0
            reason = await self._watch()
            if reason == "idle":
                await self._go_idle()
                continue
            self.resets += 1
            log.info("ws.feed_reset", reason=reason, from_seq=self.last_seq + 1)

    async def _go_idle(self) -> None:
        """Nobody has listened for `idle_s`: drop the consumer until a client wakes the feed."""
        self._idle, self._up = True, False
        self._live.clear()
        self._wanted.clear()
        await self._drop_sub()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):  # else the server reaps it (`INACTIVE_S`)
                await self.js.delete_consumer(s.EVENTS_STREAM, consumer)
        log.info("ws.feed_idle", last_seq=self.last_seq)

    def _went_down(self, error: str) -> None:
        now = time.monotonic()
        if self._up or self._down_since is None:
            log.warning("ws.feed_down", error=error)
            self._down_since = now
        self._up = False
        self._live.clear()
        if now - self._down_since >= self.grace_s and self.listeners():
            log.warning("ws.feed_lost", clients=len(self.listeners()))
            self._lose_all("event feed lost")

    async def _establish(self) -> None:
        await self._drop_sub()
        info = await self.js.stream_info(s.EVENTS_STREAM)
        last = info.state.last_seq
        if self._idle and not self._count:  # woken: nobody waits for what came meanwhile
            self.last_seq = last
            self._empty_since = time.monotonic()  # the waking client is added next, or gave up
        elif last < self.last_seq:  # deleted and declared again: old sequences mean nothing
            log.warning("ws.stream_reset", was=self.last_seq, now=last)
            self._lose_all("event stream was reset", since=0)
            self.last_seq = last
        # (else: listeners joined while the feed went idle: it goes on where it stopped)
        self._idle = False
        inbox = self.nc.new_inbox()
        self._dseq = 0
        self._trouble.clear()
        self._sub = await self.nc.subscribe(
            inbox,
            cb=self._on_msg,
            pending_msgs_limit=FEED_PENDING_MSGS,
            pending_bytes_limit=FEED_PENDING_BYTES,
        )
        config = ConsumerConfig(
            deliver_subject=inbox,
            filter_subject=s.events_filter(),
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.last_seq + 1,
            ack_policy=AckPolicy.NONE,
            max_deliver=1,
            flow_control=True,
            idle_heartbeat=HEARTBEAT_S,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=INACTIVE_S,
        )
        self._consumer = (await self.js.add_consumer(s.EVENTS_STREAM, config=config)).name
        self._seen = time.monotonic()
        if not self._up:
            log.info("ws.feed_up", from_seq=self.last_seq + 1)
        self._up, self._down_since = True, None
        self._live.set()

    async def _drop_sub(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _watch(self) -> str:
        """Wait for trouble: a gap or bad status seen by the callback, or heartbeats missing."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._trouble.wait(), HEARTBEAT_S)
            if self._trouble.is_set():
                return "gap"
            now = time.monotonic()
            if now - self._seen > HEARTBEAT_S * HEARTBEAT_MISSES:
                return "heartbeats missed"
            if self._empty_since is not None and now - self._empty_since >= self.idle_s:
                return "idle"

    def request_reset(self) -> None:
        self._trouble.set()

    # ---- the consumer's messages ----
    async def _on_msg(self, msg: Msg) -> None:
        if self._trouble.is_set():
            return  # the consumer is being replaced: what it still sends is not ours
        self._seen = time.monotonic()
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is not None:
            await self._on_status(msg, status, headers)
            return
        try:
            meta = msg.metadata
        except Exception:
            self._trouble.set()
            return
        if meta.sequence.consumer != self._dseq + 1:
            self._trouble.set()  # nats-py dropped some at its pending limit, or the server did
            return
        self._dseq = meta.sequence.consumer
        seq = meta.sequence.stream
        if seq <= self.last_seq:  # defensive: never hand out a sequence twice
            return
        self.last_seq = seq
        frame = decode_frame(seq, msg.subject, msg.data)
        if frame is not None:
            self._dispatch(frame)

    async def _on_status(self, msg: Msg, status: str, headers: dict[str, str]) -> None:
        if status != "100":
            self._trouble.set()  # e.g. 409 consumer deleted
            return
        if msg.reply:  # a flow-control request: everything before it was handled
            await self.nc.publish(msg.reply)
            return
        stalled = headers.get("Nats-Consumer-Stalled")
        if stalled:
            await self.nc.publish(stalled)
        last = headers.get("Nats-Last-Consumer")
        if last is not None and int(last) != self._dseq:
            self._trouble.set()
