"""The orchestrator process: task intake and lifecycle, one lane consumer per task lane.

Besides the reducer's decisions it does two things only it may: a record the reducer marked
`deleting` has its data removed and then the record (`store/deletion.py`, also on the replay
of that message, so a deletion cut short by a crash is completed), and a sweep, every
`[retention] sweep_interval_s`, asks each finished root task older than `[retention] days` to
be deleted (a `DeleteTask` under a fixed id, so replicas sweeping at once ask once).

A message of a task inbox that cannot be applied after its retries ends its task `failed`
(`FailTask` to the same inbox); if that cannot be applied either, `task.failed` is published
as an event, so a client is not left waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from datetime import UTC, datetime, timedelta

import structlog

from agentops.bus.connection import publish, publish_all, publish_event
from agentops.bus.consumer import Delivery
from agentops.bus.effects import perform
from agentops.bus.service import Runtime, run_process
from agentops.config import load_retention
from agentops.core import orchestrator
from agentops.core.state import TASK_RECORD_ADAPTER, TaskRecord
from agentops.protocol import subjects as s
from agentops.protocol.errors import ErrorInfo, PermanentError
from agentops.protocol.messages import (
    TERMINAL,
    AgentReport,
    CancelTask,
    DeleteTask,
    Event,
    FailTask,
    SubmitTask,
    WorkMessage,
)
from agentops.store.deletion import delete_task_data
from agentops.store.kv import scan, task_records

log = structlog.get_logger(__name__)
PROCESS = "orchestrator"
FIRST_SWEEP_S = 30.0


def expired(record: TaskRecord, now: datetime, days: int) -> bool:
    """A finished root task whose end is older than `days` (never one still running)."""
    return (
        record.status in TERMINAL
        and record.finished_at is not None
        and record.finished_at < now - timedelta(days=days)
    )


async def setup(rt: Runtime) -> None:
    store = task_records(rt.buckets, rt.publisher)
    retention = load_retention(rt.settings)
    swept = {"asked": 0, "deleted": 0}

    async def handle(msg: WorkMessage, delivery: Delivery) -> None:
        if not isinstance(msg, SubmitTask | CancelTask | AgentReport | FailTask | DeleteTask):
            raise PermanentError(f"{msg.type} does not belong in a task inbox")
        if not s.kind_fits(delivery.subject, msg.type):  # sent by a process not allowed to
            raise PermanentError(f"{msg.type} does not belong on {delivery.subject}")
        s.check_id(msg.task_id, "task id")
        record, revision = await store.load(msg.task_id)
        decision = orchestrator.step(record, msg, datetime.now(UTC))
        if decision.ignored:
            structlog.contextvars.bind_contextvars(ignored=decision.ignored)
            return
        if decision.state is not None:
            await store.save(msg.task_id, decision.state, revision)
            record = decision.state
        await perform(rt.publisher, decision.effects)
        if record is not None and record.deleting:
            await delete_task_data(rt.js, record)
            swept["deleted"] += 1
            structlog.contextvars.bind_contextvars(deleted=record.task_id)

    async def give_up(msg: WorkMessage | None, subject: str, info: ErrorInfo) -> None:
        task_id = msg.task_id if msg is not None else s.inbox_owner(subject)[0]
        with contextlib.suppress(s.InvalidName):
            s.check_id(task_id, "task id")
            now = datetime.now(UTC)
            error = ErrorInfo(
                code="internal_error",
                message=f"a message to task {task_id} could not be applied "
                f"({info.code}: {info.message})",
            )
            tag = hashlib.sha256((msg.id if msg else subject).encode()).hexdigest()[:16]
            if not isinstance(msg, FailTask):
                fail = FailTask(
                    id=f"{task_id}.dead.{tag}", source=PROCESS, task_id=task_id, ts=now,
                    error=error,
                )  # fmt: skip
                await publish_all(rt.publisher, [(s.task_inbox(task_id, fail.type), fail, fail.id)])
                return
            event = Event(
                id=f"{task_id}.dead.{tag}", type="task.failed", ts=now, task_id=task_id,
                data={"status": "failed", "reason": "internal_error", "error": error.model_dump()},
            )  # fmt: skip
            await publish_event(rt.js, event)

    async def sweep() -> None:
        """Ask every expired task to be deleted, and finish deletions left half done."""
        now = datetime.now(UTC)
        for record in await scan(rt.buckets[s.TASKS_BUCKET], TASK_RECORD_ADAPTER):
            if not (record.deleting or expired(record, now, retention.days)):
                continue
            msg = DeleteTask(
                id=f"{record.task_id}.retention", source=PROCESS, task_id=record.task_id,
                agent_id=record.agent_id, ts=now, reason="retention",
            )  # fmt: skip
            await publish(rt.js, s.task_inbox(record.task_id, msg.type), msg, msg.id)
            swept["asked"] += 1

    async def sweeping() -> None:
        delay = FIRST_SWEEP_S
        while True:
            await asyncio.sleep(delay)
            delay = retention.sweep_interval_s
            try:
                await sweep()
            except Exception as exc:  # NATS away: the next sweep tries again
                log.warning("retention.sweep_failed", error=f"{type(exc).__name__}: {exc}")

    sweeper = asyncio.create_task(sweeping(), name="retention-sweep")

    async def stop_sweeping() -> None:
        sweeper.cancel()

    rt.on_shutdown.append(stop_sweeping)
    rt.status_extra = lambda: {"retention_days": retention.days, "retention": dict(swept)}
    for lane in range(s.LANES):
        await rt.add_consumer(
            rt.consumer(
                s.orchestrator_consumer(lane),
                s.task_lane_filter(lane),
                handle,
                on_give_up=give_up,
            )
        )


def main() -> None:
    run_process(PROCESS, "AgentOps orchestrator: task intake, routing and lifecycle", setup)


if __name__ == "__main__":
    main()
