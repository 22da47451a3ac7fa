"""The LLM gateway process: turns canonical LLM requests into provider calls.

Answers go to the requesting agent's mailbox with the request id + ".result" as message id,
so a redelivered request that is answered twice still reaches the agent once. A request
redelivered to the process that already has its answer (the answer could not be published,
say NATS was restarting, or its ack was lost) is answered from memory: the provider is not
called, and billed, twice. The last `ANSWERS_KEPT` answers are kept. Routing, limits,
retries and accounting live in `agentops.llm.gateway.LLMGateway`; this module only wires it
to the bus and publishes streamed text as coalesced `llm.delta` events.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import UTC, datetime

import structlog
from nats.js import JetStreamContext

from agentops.bus.connection import publish_all, publish_event
from agentops.bus.consumer import Delivery
from agentops.bus.conversation import MISS, ConversationCache
from agentops.bus.metrics import LLM_CALLS, LLM_COST, LLM_DURATION, LLM_TOKENS
from agentops.bus.service import Runtime, run_process
from agentops.config import load_llm
from agentops.llm.gateway import LLMGateway
from agentops.protocol import subjects as s
from agentops.protocol.errors import AgentOpsError, ErrorInfo, PermanentError
from agentops.protocol.messages import Event, LLMCompleted, LLMFailed, LLMRequested, WorkMessage

log = structlog.get_logger(__name__)
PROCESS = "llm-gateway"
CONCURRENCY = 64
DELTA_INTERVAL_S = 0.05  # at most one llm.delta event per request per 50 ms
ANSWERS_KEPT = 1024


class DeltaPublisher:
    """Collects streamed text and publishes it as `llm.delta` events, coalesced in time."""

    def __init__(self, js: JetStreamContext, msg: LLMRequested) -> None:
        self.js = js
        self.msg = msg
        self.buffer: list[str] = []
        self.sent = 0
        self.last = 0.0

    async def __call__(self, text: str) -> None:
        self.buffer.append(text)
        if time.monotonic() - self.last >= DELTA_INTERVAL_S:
            await self.flush()

    async def flush(self) -> None:
        if not self.buffer:
            return
        text, self.buffer = "".join(self.buffer), []
        msg = self.msg
        event = Event(
            id=f"{msg.id}.delta{self.sent}",
            type="llm.delta",
            ts=datetime.now(UTC),
            task_id=msg.task_id,
            agent_id=msg.agent_id,
            data={"step": msg.step, "attempt": msg.attempt, "text": text},
        )
        self.sent += 1
        self.last = time.monotonic()
        try:
            await publish_event(self.js, event)
        except Exception as exc:  # live display is best effort; the answer still goes out
            log.warning("llm.delta_not_published", error=f"{type(exc).__name__}: {exc}")


async def setup(rt: Runtime) -> None:
    llm = load_llm(rt.settings)
    gateway = LLMGateway(llm)
    rt.on_shutdown.append(gateway.aclose)
    calls = {"ok": 0, "failed": 0, "answered_again": 0, "conversation_misses": 0}
    conversations = ConversationCache()  # each agent's conversation, sent once
    answers: OrderedDict[str, LLMCompleted] = OrderedDict()  # request id -> its answer

    async def handle(msg: WorkMessage, delivery: Delivery) -> None:
        if not isinstance(msg, LLMRequested):
            raise PermanentError(f"{msg.type} is not an LLM request")
        whole = conversations.resolve(msg)
        if whole is None:  # another replica (or this one before a restart) had its start
            calls["conversation_misses"] += 1
            structlog.contextvars.bind_contextvars(llm_outcome=MISS)
            info = ErrorInfo(
                code=MISS,
                message="this gateway does not have the conversation the request builds on; "
                "send it whole",
                retryable=True,
            )
            await send(msg, failed(msg, info))
            return
        msg = whole
        known = answers.get(msg.id)
        if known is not None:  # a redelivery: the provider already answered this request
            calls["answered_again"] += 1
            structlog.contextvars.bind_contextvars(llm_outcome="answered_again")
            await send(msg, known)
            return
        started = time.perf_counter()
        reply: LLMCompleted | LLMFailed
        common = {"step": msg.step, "attempt": msg.attempt}
        deltas = DeltaPublisher(rt.js, msg)
        try:
            result = await gateway.complete(msg.request, on_delta=deltas)
            reply = LLMCompleted(
                **msg.reply_header(PROCESS, datetime.now(UTC)), **common, result=result
            )
            calls["ok"] += 1
        except AgentOpsError as exc:
            reply = LLMFailed(
                **msg.reply_header(PROCESS, datetime.now(UTC)), **common, error=exc.info()
            )
            calls["failed"] += 1
        except Exception as exc:  # a provider bug must reach the agent as an error, not a loop
            log.exception("llm.provider_crashed")
            info = ErrorInfo(code="provider_error", message=f"{type(exc).__name__}: {exc}")
            reply = LLMFailed(**msg.reply_header(PROCESS, datetime.now(UTC)), **common, error=info)
            calls["failed"] += 1
        await deltas.flush()
        count(msg, reply, time.perf_counter() - started)
        if isinstance(reply, LLMCompleted):  # before sending: the send may fail and come back
            answers[msg.id] = reply
            if len(answers) > ANSWERS_KEPT:
                answers.popitem(last=False)
        await send(msg, reply)
        # Facts for the consumer's one canonical log line of this message.
        structlog.contextvars.bind_contextvars(
            llm_outcome=reply.type,
            llm_ms=round((time.perf_counter() - started) * 1000, 3),
            llm_provider=gateway.route_for(msg.request).provider,
        )

    def count(msg: LLMRequested, reply: LLMCompleted | LLMFailed, seconds: float) -> None:
        """One provider call in the process's metrics (an answer from memory is none)."""
        kind = msg.reply_to.agent_type
        outcome = "ok" if isinstance(reply, LLMCompleted) else "error"
        rt.metrics.observe(LLM_DURATION, (kind, outcome), seconds)
        rt.metrics.inc(LLM_CALLS, (kind, outcome))
        if isinstance(reply, LLMCompleted):
            usage = reply.result.usage
            rt.metrics.inc(LLM_TOKENS, (kind, "input"), usage.input_tokens)
            rt.metrics.inc(LLM_TOKENS, (kind, "output"), usage.output_tokens)
            rt.metrics.inc(LLM_COST, (kind,), usage.cost_usd)

    async def send(msg: LLMRequested, reply: LLMCompleted | LLMFailed) -> None:
        mailbox = s.agent_mailbox(msg.reply_to.agent_type, msg.reply_to.agent_id, reply.type)
        await publish_all(rt.publisher, [(mailbox, reply, reply.id)])

    async def give_up(msg: WorkMessage | None, _: str, info: ErrorInfo) -> None:
        """A request that cannot be handled still gets an answer, so the agent never hangs."""
        if isinstance(msg, LLMRequested):
            await send(msg, failed(msg, info))

    def failed(msg: LLMRequested, info: ErrorInfo) -> LLMFailed:
        return LLMFailed(
            **msg.reply_header(PROCESS, datetime.now(UTC)),
            step=msg.step,
            attempt=msg.attempt,
            error=info,
        )

    rt.status_extra = lambda: {
        "provider": llm.default.provider,
        "model": llm.default.model if llm.default.provider != "mock" else None,
        "providers": sorted(llm.providers()),
        "llm_calls": dict(calls),
        "llm_retries": gateway.stats["retries"],
        "conversation_messages_reused": conversations.reused,
        "conversations_held": len(conversations),
    }
    await rt.serve_pool(s.LLM_GATEWAY_CONSUMER, s.llm_requests(), handle, give_up, CONCURRENCY)


def main() -> None:
    run_process(PROCESS, "AgentOps LLM gateway: provider adapters", setup)


if __name__ == "__main__":
    main()
