"""The LLM gateway process: turns canonical LLM requests into provider calls.

Answers go to the requesting agent's mailbox with the request id + ".result" as message id,
so a redelivered request that is answered twice still reaches the agent once.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import structlog

from agentops.bus.connection import publish
from agentops.bus.consumer import Delivery
from agentops.bus.service import Runtime, run_process
from agentops.llm.providers import make_provider
from agentops.protocol import subjects as s
from agentops.protocol.errors import AgentOpsError, ErrorInfo, PermanentError
from agentops.protocol.messages import LLMCompleted, LLMFailed, LLMRequested, WorkMessage

log = structlog.get_logger(__name__)
PROCESS = "llm-gateway"
CONCURRENCY = 64


async def setup(rt: Runtime) -> None:
    provider = make_provider(rt.settings.llm_provider)
    calls = {"ok": 0, "failed": 0}

    async def handle(msg: WorkMessage, delivery: Delivery) -> None:
        if not isinstance(msg, LLMRequested):
            raise PermanentError(f"{msg.type} is not an LLM request")
        started = time.perf_counter()
        reply: LLMCompleted | LLMFailed
        common = {"step": msg.step, "attempt": msg.attempt}
        try:
            result = await provider.complete(msg.request)
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
        await send(msg, reply)
        # Facts for the consumer's one canonical log line of this message.
        structlog.contextvars.bind_contextvars(
            llm_outcome=reply.type, llm_ms=round((time.perf_counter() - started) * 1000, 3)
        )

    async def send(msg: LLMRequested, reply: LLMCompleted | LLMFailed) -> None:
        mailbox = s.agent_mailbox(msg.reply_to.agent_type, msg.reply_to.agent_id)
        await publish(rt.js, mailbox, reply, reply.id)

    async def give_up(msg: WorkMessage, info: ErrorInfo) -> None:
        """A request that cannot be handled still gets an answer, so the agent never hangs."""
        if isinstance(msg, LLMRequested):
            info_reply = LLMFailed(
                **msg.reply_header(PROCESS, datetime.now(UTC)),
                step=msg.step,
                attempt=msg.attempt,
                error=info,
            )
            await send(msg, info_reply)

    rt.status_extra = lambda: {"provider": provider.name, "llm_calls": dict(calls)}
    await rt.serve_pool(s.LLM_GATEWAY_CONSUMER, s.llm_requests(), handle, give_up, CONCURRENCY)


def main() -> None:
    run_process(PROCESS, "AgentOps LLM gateway: provider adapters", setup)


if __name__ == "__main__":
    main()
