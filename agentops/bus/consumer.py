"""The consumer loop: deliver → decode → handle → ack / nak / term + dead-letter.

Rules:
- success → ack. `RetryableError`, or NATS / a stream leader unavailable (`UNAVAILABLE`: a
  timeout, no responders, 503) → nak with backoff (the message comes back, in order, to
  whichever replica is delivered it next). Anything that cannot be decoded, a `PermanentError`,
  or an unexpected exception that keeps failing after `MAX_BUG_RETRIES` deliveries → copied to
  the dead-letter stream with the reason in headers, then terminated. A bad message is never
  retried forever and never crashes the process.
- Consumers are durable push consumers delivered to a queue group (one per consumer, shared
  by every replica), so a message costs no fetch request: JetStream sends it as soon as the
  consumer may have another unacked one. Lanes (`concurrency=1`, `max_ack_pending=1`) give
  one-at-a-time, in-order handling per consumer across all replicas. Pools (`concurrency>1`)
  handle messages concurrently, at most `concurrency` at a time per process.
- Every message held by this process (running or waiting for a slot) gets `in_progress()`
  heartbeats, so a long handler is not redelivered behind its back. On stop, messages not yet
  started are nak'ed at once (another replica, or this one restarted, takes them); a running
  handler finishes and acks first.
- A handler sees the decoded message, its delivery count and, on a lane, whether this
  process also got the lane's previous delivery (`Delivery.sole`); it must be idempotent.
- A consumer found deleted (by hand, or with its stream) is created again by the watchdog
  (`consumer.recreated` in the log), once its stream exists again.
- A watchdog kicks the consumer when it has work, nothing out and has delivered nothing for
  two looks in a row (JetStream can leave a push consumer stuck so after a server restart):
  every replica unsubscribes for a moment and subscribes again (`Consumer._watch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, BadRequestError, NotFoundError, ServiceUnavailableError
from pydantic import ValidationError

from agentops.bus.connection import ERROR_CODE, ERROR_MESSAGE, ORIGINAL_SUBJECT
from agentops.protocol import subjects as s
from agentops.protocol.errors import AgentOpsError, ErrorInfo, PermanentError, RetryableError
from agentops.protocol.messages import WORK_ADAPTER, WorkMessage

log = structlog.get_logger(__name__)

MAX_BUG_RETRIES = 5
# A node lost with a message out (its ack, or the delivery, gone with it): the consumer's new
# leader sends it again after ack_wait, so ack_wait bounds that stall. 3 s (was 10 s) keeps a
# node loss under the 5 s target (bench/bench_chaos.py); held messages get in_progress()
# every second, so a long handler is never redelivered behind its back.
ACK_WAIT_S = 3.0
HEARTBEAT_S = ACK_WAIT_S / 3
# How often a consumer with work and nothing out is looked at (`_watch`): a stall is kicked
# at the second look, so within two looks of 1.5 s (were 5 s).
STALL_CHECK_S = 1.5
KICK_PAUSE_S = 0.25  # how long every replica stays unsubscribed when a stall is kicked
PULL_TO_PUSH = 10012  # JetStream: "can not update pull consumer to push based"


@dataclass(frozen=True, slots=True)
class Delivery:
    subject: str
    num_delivered: int
    # A lane only: this process also received the lane's previous delivery (consumer
    # sequences are consecutive), so no other replica handled any message of the lane in
    # between and what this process last wrote for the lane's keys is still current.
    sole: bool = False


Handler = Callable[[WorkMessage, Delivery], Awaitable[None]]
# Called with a message about to be dead-lettered (None when it could not be decoded), its
# subject and why: a request is still answered, a mailbox's agent or task ends `failed`.
GiveUp = Callable[[WorkMessage | None, str, ErrorInfo], Awaitable[None]]


# What a handler meets while NATS, or a stream's leader, is away: a cluster electing a new
# leader answers nothing (or 503) for 4-9 s, longer than the bug retries last, and a message
# that only met these must not be dead-lettered as broken.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    TimeoutError,  # nats.errors.TimeoutError is one too
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    ServiceUnavailableError,
)


def decode_work(data: bytes) -> WorkMessage:
    try:
        return WORK_ADAPTER.validate_json(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[:3]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in first)
        raise PermanentError(f"undecodable work message: {detail}", code="bad_message") from None


async def _settle(reply: Awaitable[None]) -> None:
    """Ack/nak/term without letting a lost connection kill the worker: an ack that does not
    arrive means a redelivery after ack_wait, which handling already tolerates."""
    try:
        await reply
    except Exception as exc:
        log.warning("message.settle_failed", error=f"{type(exc).__name__}: {exc}")


def stall_check(
    seen: int | None, pending: int, ack_pending: int, delivered: int | None
) -> tuple[int | None, bool]:
    """One look at a consumer: (what to remember, whether it is stalled). Stalled: messages
    pending, none out for an ack, and the last delivery the same as at the previous look
    (`seen`, the stream sequence remembered then)."""
    if not pending or ack_pending or delivered is None:
        return None, False
    if seen != delivered:
        return delivered, False
    return None, True


# A retried message holds only its own lane (max_ack_pending 1) or one pool slot, so retrying
# it every second costs little; a longer cap (it was 30 s) made a lane that hit a cluster's
# election (~5 s without a leader) wait seconds more after the leader was back.
MAX_BACKOFF_S = 1.0


def backoff_s(num_delivered: int) -> float:
    return float(min(MAX_BACKOFF_S, 0.1 * 2 ** max(0, num_delivered - 1)))


async def dead_letter(js: JetStreamContext, msg: Msg, code: str, reason: str) -> None:
    headers = {ERROR_CODE: code, ERROR_MESSAGE: reason[:1024], ORIGINAL_SUBJECT: msg.subject}
    try:
        await js.publish(s.dead_letter(msg.subject), msg.data, headers=headers)
    except Exception as exc:  # the DLQ is best effort; the message is still terminated
        log.error("dlq.publish_failed", subject=msg.subject, error=str(exc))


async def ensure_consumer(
    js: JetStreamContext,
    stream: str,
    durable: str,
    filter_subject: str,
    max_ack_pending: int,
    deliver_subject: str,
) -> None:
    config = ConsumerConfig(
        # `name` too: nats-py then creates it on CONSUMER.CREATE.<stream>.<name>.<filter>, a
        # subject a NATS permission can pin to exactly this consumer and filter (deploy/hybrid)
        name=durable,
        durable_name=durable,
        filter_subject=filter_subject,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ACK_WAIT_S,
        max_ack_pending=max_ack_pending,
        max_deliver=-1,
        deliver_subject=deliver_subject,
        deliver_group=durable,
    )
    try:
        await js.add_consumer(stream, config)
    except APIError as exc:
        if exc.err_code != PULL_TO_PUSH and not isinstance(exc, BadRequestError):
            raise
        # A consumer left by an older version (a pull consumer, another deliver subject)
        # cannot be updated into this one. Replacing it loses nothing: on a work-queue stream
        # every unacked message stays stored and the new consumer starts from the first.
        log.warning("consumer.replaced", consumer=durable, reason=exc.description)
        await js.delete_consumer(stream, durable)
        await js.add_consumer(stream, config)


class Consumer:
    """One durable push consumer of the work stream, served by this process (and replicas).

    Messages arrive on `deliver_subject` in the queue group named after the consumer; each is
    handled in its own task, at most `concurrency` at a time.
    """

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        *,
        stream: str,
        durable: str,
        filter_subject: str,
        deliver_subject: str,
        handler: Handler,
        concurrency: int = 1,
        max_ack_pending: int | None = None,
        on_give_up: GiveUp | None = None,
    ) -> None:
        self.nc = nc
        self.js = js
        self.on_give_up = on_give_up
        self.stream = stream
        self.durable = durable
        self.filter_subject = filter_subject
        self.deliver_subject = deliver_subject
        self.handler = handler
        self.concurrency = concurrency
        self.max_ack_pending = max_ack_pending or (1 if concurrency == 1 else 1024)
        self._slots = asyncio.Semaphore(concurrency)
        self._sub: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: dict[int, asyncio.Task[None]] = {}  # id(message) -> its task, not started
        # id(message) -> (message, when it was last reported in progress)
        self._held: dict[int, tuple[Msg, float]] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._kick_sub: Subscription | None = None
        self._kicking = False
        self._stopping = False
        self.kicks = 0  # stalls this process found (`_watch`)
        self._last_sequence = -1  # consumer sequence of this process's latest delivery
        self.handled = 0
        self.dead_lettered = 0
        self.recreated = 0  # times its consumer was found deleted and created again

    async def start(self) -> None:
        await ensure_consumer(
            self.js,
            self.stream,
            self.durable,
            self.filter_subject,
            self.max_ack_pending,
            self.deliver_subject,
        )
        self._kick_sub = await self.nc.subscribe(
            s.kick_subject(self.deliver_subject), cb=self._kick
        )
        self._sub = await self._subscribe()
        self._heartbeat = asyncio.create_task(
            self._heartbeats(), name=f"consumer:{self.durable}:heartbeat"
        )
        self._watchdog = asyncio.create_task(self._watch(), name=f"consumer:{self.durable}:watch")

    async def _subscribe(self) -> Subscription:
        return await self.nc.subscribe(
            self.deliver_subject, queue=self.durable, cb=self._on_message
        )

    async def stop(self) -> None:
        """Stop receiving; messages not started are nak'ed, a running handler finishes first."""
        self._stopping = True  # first: a kick or the watchdog would subscribe again
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._kick_sub is not None:
            with contextlib.suppress(Exception):
                await self._kick_sub.unsubscribe()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        for task in list(self._waiting.values()):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=ACK_WAIT_S)
        for task in list(self._tasks):
            task.cancel()
        if self._heartbeat is not None:
            self._heartbeat.cancel()

    async def _on_message(self, msg: Msg) -> None:
        # Called in order by the subscription; handling runs in its own task, so a slow
        # handler never holds up delivery to the others (pools) or a clean stop.
        self._held[id(msg)] = (msg, time.monotonic())
        sole = False
        metadata = msg.metadata  # parsed from the reply subject on every access: once here
        num = metadata.num_delivered if metadata is not None else 1
        if self.concurrency == 1 and metadata is not None:
            sequence = metadata.sequence.consumer
            sole = sequence == self._last_sequence + 1
            self._last_sequence = sequence
        task = asyncio.create_task(self._run(msg, num, sole))
        self._waiting[id(msg)] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, msg: Msg, num: int, sole: bool) -> None:
        try:
            try:
                await self._slots.acquire()
            except asyncio.CancelledError:  # stopping before its turn: hand it back now
                await _settle(msg.nak())
                return
            finally:
                self._waiting.pop(id(msg), None)
            try:
                await self._handle(msg, num, sole)
            except Exception:  # never lose the consumer; the message is redelivered
                log.exception("consumer.handle_crashed", consumer=self.durable)
            finally:
                self._slots.release()
        finally:
            self._held.pop(id(msg), None)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S / 2)
            now = time.monotonic()
            for key, (msg, since) in list(self._held.items()):
                if now - since >= HEARTBEAT_S and key in self._held:
                    self._held[key] = (msg, now)
                    with contextlib.suppress(Exception):
                        await msg.in_progress()

    async def _watch(self) -> None:
        """Kick the consumer when JetStream stops pushing it messages it has.

        After nats-server restarts, a push consumer can keep messages pending, none unacked,
        its subscribers in place, and never send them (nats-server 2.15, about one restart in
        three with tasks in flight; a config update or a new message does not wake it): its
        lanes would wait forever. What wakes it is its deliver subject losing all interest and
        getting it back. So a consumer seen so twice `STALL_CHECK_S` apart, with the same
        last delivery and nothing held here, is kicked: every replica (this process too) is
        told on the kick subject to unsubscribe for `KICK_PAUSE_S` and subscribe again.
        """
        seen: int | None = None
        while True:
            await asyncio.sleep(STALL_CHECK_S)
            if self._held or self._kicking:
                seen = None
                continue
            try:
                if self._sub is None:  # a kick could not subscribe again
                    await self._resubscribe()
                    continue
                info = await self.js.consumer_info(self.stream, self.durable)
                delivered = info.delivered.stream_seq if info.delivered else None
                seen, stalled = stall_check(
                    seen, info.num_pending or 0, info.num_ack_pending or 0, delivered
                )
                if stalled:
                    self.kicks += 1
                    log.warning(
                        "consumer.stalled", consumer=self.durable, pending=info.num_pending,
                        delivered=delivered,
                    )  # fmt: skip
                    await self.nc.publish(s.kick_subject(self.deliver_subject))
            except NotFoundError:  # deleted (or its stream was): create it again
                seen = None
                await self._recreate()
            except Exception as exc:  # NATS away: the next round looks again
                log.warning("consumer.watch_failed", consumer=self.durable, error=str(exc))
                seen = None

    async def _recreate(self) -> None:
        """The consumer is gone (deleted by hand, or with its stream, which the orchestrator
        declares again): create it as at start-up; its deliver subject is unchanged, so the
        subscriptions in place receive from it."""
        try:
            await ensure_consumer(
                self.js, self.stream, self.durable, self.filter_subject, self.max_ack_pending,
                self.deliver_subject,
            )  # fmt: skip
        except Exception as exc:  # its stream not back yet: the next round tries again
            log.warning("consumer.recreate_failed", consumer=self.durable, error=str(exc))
            return
        self.recreated += 1
        log.warning("consumer.recreated", consumer=self.durable)

    async def _kick(self, _: Msg) -> None:
        """Unsubscribe, wait while the other replicas do too, subscribe again."""
        if self._held or self._kicking or self._stopping:  # busy here: this lane moves
            return
        self._kicking = True
        try:
            sub, self._sub = self._sub, None
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            await asyncio.sleep(KICK_PAUSE_S)
            await self._resubscribe()
        except Exception as exc:  # the watchdog subscribes on its next round
            log.warning("consumer.resubscribe_failed", consumer=self.durable, error=str(exc))
        finally:
            self._kicking = False

    async def _resubscribe(self) -> None:
        if self._stopping:
            return
        sub = await self._subscribe()
        if self._stopping:  # stopped meanwhile: it must not receive anything
            await sub.unsubscribe()
            return
        self._sub = sub

    async def _handle(self, msg: Msg, num: int, sole: bool) -> None:
        started = time.perf_counter()
        message: WorkMessage | None = None
        outcome = "ack"
        try:
            message = decode_work(msg.data)
            structlog.contextvars.bind_contextvars(
                msg_type=message.type, msg_id=message.id, task_id=message.task_id,
                agent_id=message.agent_id,
            )  # fmt: skip
            await self.handler(message, Delivery(msg.subject, num, sole))
            await _settle(msg.ack())
        except RetryableError as exc:
            outcome = "nak"
            log.warning("message.retry", subject=msg.subject, error=exc.message, delivered=num)
            await _settle(msg.nak(delay=backoff_s(num)))
        except UNAVAILABLE as exc:  # NATS or a stream leader away: not a bug, retried as long
            outcome = "nak"
            error = f"{type(exc).__name__}: {exc}"
            log.warning("message.retry", subject=msg.subject, error=error, delivered=num)
            await _settle(msg.nak(delay=backoff_s(num)))
        except PermanentError as exc:
            outcome = "dead_letter"
            log.error("message.dead_letter", subject=msg.subject, code=exc.code, error=exc.message)
            await self._give_up(msg, message, exc.info())
        except Exception as exc:
            if num < MAX_BUG_RETRIES:
                outcome = "nak"
                log.exception("message.failed", subject=msg.subject, delivered=num)
                await _settle(msg.nak(delay=backoff_s(num)))
            else:
                outcome = "dead_letter"
                log.exception("message.failed_permanently", subject=msg.subject, delivered=num)
                code = exc.code if isinstance(exc, AgentOpsError) else "internal"
                info = ErrorInfo(code=code, message=f"{type(exc).__name__}: {exc}")
                await self._give_up(msg, message, info)
        finally:
            self.handled += 1
            log.info(
                "message.handled",
                consumer=self.durable,
                subject=msg.subject,
                outcome=outcome,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
            structlog.contextvars.clear_contextvars()

    async def _give_up(self, msg: Msg, message: WorkMessage | None, info: ErrorInfo) -> None:
        """Dead-letter and terminate; first tell the owner (answer a requester, end the
        agent or task the message belonged to)."""
        self.dead_lettered += 1
        if self.on_give_up is not None:
            try:
                await self.on_give_up(message, msg.subject, info)
            except Exception:
                log.exception("message.give_up_failed", subject=msg.subject)
        await dead_letter(self.js, msg, info.code, info.message)
        await _settle(msg.term())
