"""The orchestrator process: task intake and lifecycle, one lane consumer per task lane."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog

from agentops.bus.consumer import Delivery
from agentops.bus.effects import perform
from agentops.bus.service import Runtime, run_process
from agentops.core import orchestrator
from agentops.protocol import subjects as s
from agentops.protocol.errors import PermanentError
from agentops.protocol.messages import AgentReport, CancelTask, SubmitTask, WorkMessage
from agentops.store.kv import task_records

log = structlog.get_logger(__name__)
PROCESS = "orchestrator"


async def setup(rt: Runtime) -> None:
    store = task_records(rt.buckets, rt.publisher)

    async def handle(msg: WorkMessage, delivery: Delivery) -> None:
        if not isinstance(msg, SubmitTask | CancelTask | AgentReport):
            raise PermanentError(f"{msg.type} does not belong in a task inbox")
        s.check_id(msg.task_id, "task id")
        record, revision = await store.load(msg.task_id)
        decision = orchestrator.step(record, msg, datetime.now(UTC))
        if decision.ignored:
            structlog.contextvars.bind_contextvars(ignored=decision.ignored)
            return
        if decision.state is not None:
            await store.save(msg.task_id, decision.state, revision)
        await perform(rt.publisher, decision.effects)

    for lane in range(s.LANES):
        await rt.add_consumer(
            rt.consumer(s.orchestrator_consumer(lane), s.task_lane_filter(lane), handle)
        )


def main() -> None:
    run_process(PROCESS, "AgentOps orchestrator: task intake, routing and lifecycle", setup)


if __name__ == "__main__":
    main()
