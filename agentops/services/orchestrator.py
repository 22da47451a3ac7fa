"""The orchestrator process: task intake and lifecycle, one lane consumer per task lane.

Besides the reducer's decisions it does three things only it may: every `REDECLARE_EVERY_S`
it declares again any stream or bucket that went missing (`bus/setup.redeclare_missing`); a
record the reducer marked `deleting` has its data removed and then the record (`store/deletion.py`, also on the replay
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
from typing import get_args

import structlog

from agentops.agents.loader import agent_types as configured_types
from agentops.bus.connection import publish, publish_all, publish_event
from agentops.bus.consumer import Delivery
from agentops.bus.effects import perform
from agentops.bus.service import Runtime, run_process
from agentops.bus.setup import REDECLARE_EVERY_S, redeclare_missing
from agentops.config import load_retention
from agentops.core import orchestrator, workflow
from agentops.core.state import TASK_RECORD_ADAPTER, TaskRecord
from agentops.core.workflow import WORKFLOW_ADAPTER, WorkflowRecord
from agentops.protocol import subjects as s
from agentops.protocol.errors import ErrorInfo, PermanentError
from agentops.protocol.messages import (
    TERMINAL,
    DeleteTask,
    Event,
    FailTask,
    TaskInbound,
    WorkflowInbound,
    WorkMessage,
)
from agentops.store.deletion import delete_task_data, delete_workflow_data
from agentops.store.kv import scan, task_records, workflow_records
from agentops.store.summaries import backfill

log = structlog.get_logger(__name__)
PROCESS = "orchestrator"
TASK_MESSAGES = get_args(TaskInbound)  # what may arrive in a task inbox
WORKFLOW_MESSAGES = get_args(WorkflowInbound)
FIRST_SWEEP_S = 30.0


def expired(record: TaskRecord | WorkflowRecord, now: datetime, days: int) -> bool:
    """A finished root task whose end is older than `days` (never one still running)."""
    return (
        record.status in TERMINAL
        and record.finished_at is not None
        and record.finished_at < now - timedelta(days=days)
    )


async def setup(rt: Runtime) -> None:
    store = task_records(rt.buckets, rt.publisher)
    workflows = workflow_records(rt.buckets, rt.publisher)
    retention = load_retention(rt.settings)
    agent_types = frozenset(configured_types(rt.settings))  # what a delegation may name
    swept = {"asked": 0, "deleted": 0}

    async def handle(msg: WorkMessage, delivery: Delivery) -> None:
        if not s.kind_fits(delivery.subject, msg.type):  # sent by a process not allowed to
            raise PermanentError(f"{msg.type} does not belong on {delivery.subject}")
        s.check_id(msg.task_id, "task id")
        if msg.task_id.startswith(s.WORKFLOW_PREFIX):
            await handle_workflow(msg)
            return
        if not isinstance(msg, TASK_MESSAGES):
            raise PermanentError(f"{msg.type} does not belong in a task inbox")
        record, revision = await store.load(msg.task_id)
        decision = orchestrator.step(record, msg, datetime.now(UTC), agent_types)
        if decision.ignored:
            structlog.contextvars.bind_contextvars(ignored=decision.ignored)
            return
        if decision.state is not None:
            await store.save(msg.task_id, decision.state, revision)
            record = decision.state
        await perform(rt.publisher, decision.effects)
        if record is not None and record.deleting:
            await delete_task_data(rt.js, record, store)
            swept["deleted"] += 1
            structlog.contextvars.bind_contextvars(deleted=record.task_id)

    async def handle_workflow(msg: WorkMessage) -> None:
        """A workflow's inbox (its id starts `wf_`): the workflow reducer on its record."""
        if not isinstance(msg, WORKFLOW_MESSAGES):
            raise PermanentError(f"{msg.type} does not belong in a workflow inbox")
        record, revision = await workflows.load(msg.task_id)
        decision = workflow.step(record, msg, datetime.now(UTC))
        if decision.ignored:
            structlog.contextvars.bind_contextvars(ignored=decision.ignored)
            return
        if decision.state is not None:
            await workflows.save(msg.task_id, decision.state, revision)
            record = decision.state
        await perform(rt.publisher, decision.effects)
        if record is not None and record.deleting:
            await delete_workflow_data(rt.js, record, store, workflows)
            swept["deleted"] += 1

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
        roots: list[TaskRecord | WorkflowRecord] = [
            r
            for r in await scan(rt.buckets[s.TASKS_BUCKET], TASK_RECORD_ADAPTER)
            if r.parent is None  # children go with their root
        ]
        flows: list[WorkflowRecord] = await scan(rt.buckets[s.WORKFLOWS_BUCKET], WORKFLOW_ADAPTER)
        roots.extend(flows)
        for record in roots:
            if not (record.deleting or expired(record, now, retention.days)):
                continue
            record_id = record.task_id if isinstance(record, TaskRecord) else record.workflow_id
            msg = DeleteTask(
                id=f"{record_id}.retention", source=PROCESS, task_id=record_id, ts=now,
                reason="retention",
            )  # fmt: skip
            await publish(rt.js, s.task_inbox(record_id, msg.type), msg, msg.id)
            swept["asked"] += 1

    async def sweeping() -> None:
        delay = min(FIRST_SWEEP_S, retention.sweep_interval_s)
        while True:
            await asyncio.sleep(delay)
            delay = retention.sweep_interval_s
            try:
                await sweep()
            except Exception as exc:  # NATS away: the next sweep tries again
                log.warning("retention.sweep_failed", error=f"{type(exc).__name__}: {exc}")

    sweeper = asyncio.create_task(sweeping(), name="retention-sweep")
    redeclared = {"count": 0}

    async def declaring() -> None:
        """Streams and buckets deleted while running are declared again (`/health` shows them
        missing meanwhile): a deleted events stream must not leave tasks queued for ever. The
        agent summaries are filled in from the heads at start and when their bucket is new."""
        summaries_due = True
        while True:
            try:
                if summaries_due:
                    await backfill(rt.js)
                    summaries_due = False
            except Exception as exc:  # NATS away: the next round tries again
                log.warning("summaries.backfill_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(REDECLARE_EVERY_S)
            try:
                names = await redeclare_missing(rt.js, retention.days, rt.replicas)
            except Exception as exc:  # NATS away: the next round looks again
                log.warning("jetstream.check_failed", error=f"{type(exc).__name__}: {exc}")
                continue
            if names:
                redeclared["count"] += len(names)
                summaries_due = summaries_due or s.SUMMARIES_BUCKET in names
                log.warning("jetstream.redeclared", streams=names)

    declarer = asyncio.create_task(declaring(), name="redeclare")

    async def stop_sweeping() -> None:
        sweeper.cancel()
        declarer.cancel()

    rt.on_shutdown.append(stop_sweeping)
    rt.status_extra = lambda: {
        "retention_days": retention.days,
        "retention": dict(swept),
        "redeclared": redeclared["count"],
    }
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
