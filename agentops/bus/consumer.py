"""The consumer loop: fetch → decode → handle → ack / nak / term + dead-letter.

Rules:
- success → ack. `RetryableError` → nak with backoff (the message comes back, in order, to
  whichever replica fetches it next). Anything that cannot be decoded, a `PermanentError`,
  or an unexpected exception that keeps failing after `MAX_BUG_RETRIES` deliveries → copied to
  the dead-letter stream with the reason in headers, then terminated. A bad message is never
  retried forever and never crashes the process.
- Lanes (`concurrency=1`, `max_ack_pending=1`) give one-at-a-time, in-order handling per
  consumer across all replicas. Pools (`concurrency>1`) handle messages concurrently and send
  `in_progress()` heartbeats while a long handler runs.
- A handler sees the decoded message and its delivery count; it must be idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from agentops.bus.connection import ERROR_CODE, ERROR_MESSAGE, ORIGINAL_SUBJECT
from agentops.protocol import subjects as s
from agentops.protocol.errors import AgentOpsError, ErrorInfo, PermanentError, RetryableError
from agentops.protocol.messages import WORK_ADAPTER, WorkMessage

log = structlog.get_logger(__name__)

MAX_BUG_RETRIES = 5
ACK_WAIT_S = 10.0  # handlers are short; pools send in_progress() while a long one runs
FETCH_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Delivery:
    subject: str
    num_delivered: int


Handler = Callable[[WorkMessage, Delivery], Awaitable[None]]
# Called with a decoded message that is about to be dead-lettered (e.g. to answer a request).
GiveUp = Callable[[WorkMessage, ErrorInfo], Awaitable[None]]


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


def _raise_if_cancelling() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def backoff_s(num_delivered: int) -> float:
    return float(min(30.0, 0.1 * 2 ** max(0, num_delivered - 1)))


async def dead_letter(js: JetStreamContext, msg: Msg, code: str, reason: str) -> None:
    headers = {ERROR_CODE: code, ERROR_MESSAGE: reason[:1024], ORIGINAL_SUBJECT: msg.subject}
    try:
        await js.publish(s.dead_letter(msg.subject), msg.data, headers=headers)
    except Exception as exc:  # the DLQ is best effort; the message is still terminated
        log.error("dlq.publish_failed", subject=msg.subject, error=str(exc))


async def ensure_consumer(
    js: JetStreamContext, stream: str, durable: str, filter_subject: str, max_ack_pending: int
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
        max_waiting=512,
    )
    await js.add_consumer(stream, config)


class Consumer:
    """One durable pull consumer served by `concurrency` workers of this process.

    Each worker has its own pull subscription and fetches one message at a time: a pending
    fetch(1) returns as soon as a message arrives, whereas nats-py's fetch(n > 1) lingers
    until n messages or the timeout.
    """

    def __init__(
        self,
        js: JetStreamContext,
        *,
        stream: str,
        durable: str,
        filter_subject: str,
        handler: Handler,
        concurrency: int = 1,
        max_ack_pending: int | None = None,
        on_give_up: GiveUp | None = None,
    ) -> None:
        self.on_give_up = on_give_up
        self.js = js
        self.stream = stream
        self.durable = durable
        self.filter_subject = filter_subject
        self.handler = handler
        self.concurrency = concurrency
        self.max_ack_pending = max_ack_pending or (1 if concurrency == 1 else 1024)
        self._stopping = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._subs: list[JetStreamContext.PullSubscription] = []
        self._busy: set[asyncio.Task[None] | None] = set()
        self.handled = 0

    async def start(self) -> None:
        await ensure_consumer(
            self.js, self.stream, self.durable, self.filter_subject, self.max_ack_pending
        )
        for n in range(self.concurrency):
            sub = await self.js.pull_subscribe_bind(self.durable, self.stream)
            self._subs.append(sub)
            self._workers.append(
                asyncio.create_task(self._work(sub), name=f"consumer:{self.durable}:{n}")
            )

    async def stop(self) -> None:
        """Stop fetching; a message being handled is finished (and acked) first."""
        self._stopping.set()
        for worker in self._workers:
            if worker not in self._busy:  # idle in fetch(): nothing to finish
                worker.cancel()
        if self._workers:
            await asyncio.wait(self._workers, timeout=ACK_WAIT_S)
        for worker in self._workers:
            worker.cancel()
        # Unsubscribe now: draining a pull subscription otherwise waits for its pending
        # fetch request to expire on the server (FETCH_TIMEOUT_S).
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _work(self, sub: JetStreamContext.PullSubscription) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await sub.fetch(1, timeout=FETCH_TIMEOUT_S)
            except (TimeoutError, nats.errors.TimeoutError):
                _raise_if_cancelling()  # nats-py may turn a cancellation into a timeout
                continue
            except Exception as exc:  # disconnected, consumer deleted: retry after a pause
                _raise_if_cancelling()
                if self._stopping.is_set():
                    return
                log.warning("consumer.fetch_failed", consumer=self.durable, error=str(exc))
                with contextlib.suppress(Exception):
                    await ensure_consumer(
                        self.js,
                        self.stream,
                        self.durable,
                        self.filter_subject,
                        self.max_ack_pending,
                    )
                await asyncio.sleep(1.0)
                continue
            me = asyncio.current_task()
            self._busy.add(me)
            try:
                for msg in msgs:
                    try:
                        await self._handle(msg)
                    except Exception:  # never lose the worker; the message is redelivered
                        log.exception("consumer.handle_crashed", consumer=self.durable)
            finally:
                self._busy.discard(me)

    async def _handle(self, msg: Msg) -> None:
        started = time.perf_counter()
        num = msg.metadata.num_delivered if msg.metadata else 1
        heartbeat = asyncio.create_task(self._heartbeat(msg)) if self.concurrency > 1 else None
        message: WorkMessage | None = None
        outcome = "ack"
        try:
            message = decode_work(msg.data)
            structlog.contextvars.bind_contextvars(
                msg_type=message.type, msg_id=message.id, task_id=message.task_id,
                agent_id=message.agent_id,
            )  # fmt: skip
            await self.handler(message, Delivery(msg.subject, num))
            await _settle(msg.ack())
        except RetryableError as exc:
            outcome = "nak"
            log.warning("message.retry", subject=msg.subject, error=exc.message, delivered=num)
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
            if heartbeat is not None:
                heartbeat.cancel()
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
        """Dead-letter and terminate; answer the requester first when there is one."""
        if message is not None and self.on_give_up is not None:
            try:
                await self.on_give_up(message, info)
            except Exception:
                log.exception("message.give_up_failed", subject=msg.subject)
        await dead_letter(self.js, msg, info.code, info.message)
        await _settle(msg.term())

    async def _heartbeat(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(ACK_WAIT_S / 3)
            with contextlib.suppress(Exception):
                await msg.in_progress()
