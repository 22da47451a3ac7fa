"""Deleting a finished task's data: what `DELETE /tasks/{id}` and the retention sweep remove.

Everything below a root task (or workflow) goes: its children's data first (their records
read for their own children), then each agent's thread, head, summary and tool-call claims,
the task's events and its workspace, then the task record. Every step is idempotent (a
stream purge by subject, a work message with a fixed id), so a deletion cut short by a crash
is completed by the redelivered message, and the record, the last thing removed, keeps saying
`deleting` until then.
"""

from __future__ import annotations

from datetime import UTC, datetime

from nats.js import JetStreamContext

from agentops.bus.connection import publish
from agentops.core.state import TaskRecord
from agentops.core.workflow import WorkflowRecord
from agentops.protocol import subjects as s
from agentops.protocol.messages import DeleteWorkspace, Event
from agentops.store.kv import DocumentStore

SOURCE = "orchestrator"


async def delete_task_data(
    js: JetStreamContext,
    record: TaskRecord,
    tasks: DocumentStore[TaskRecord],
    workspace: bool = True,
) -> None:
    """Remove what belongs to `record` (marked `deleting`, or a child of one), the record
    last. `workspace`: its workspace is its own (a root's), to delete too."""
    for child_id in record.children:
        child, _ = await tasks.load(child_id)
        if child is not None:
            await delete_task_data(js, child, tasks, workspace=False)
    await _purge_task(js, record, workspace)


async def delete_workflow_data(
    js: JetStreamContext,
    record: WorkflowRecord,
    tasks: DocumentStore[TaskRecord],
    workflows: DocumentStore[WorkflowRecord],
) -> None:
    """A finished workflow: its stages' tasks (and their trees), its workspace, its events,
    then its record."""
    for stage in record.stages:
        if stage.task_id is None:
            continue
        child, _ = await tasks.load(stage.task_id)
        if child is not None:
            await delete_task_data(js, child, tasks, workspace=False)
    await js.purge_stream(s.EVENTS_STREAM, subject=s.events_of_task(record.workflow_id))
    await _delete_workspace(js, record.workflow_id, record.workflow_id)
    await js.purge_stream(
        s.kv_stream(s.WORKFLOWS_BUCKET), subject=s.kv_key(s.WORKFLOWS_BUCKET, record.workflow_id)
    )


async def _delete_workspace(js: JetStreamContext, task_id: str, workspace_id: str) -> None:
    message = DeleteWorkspace(
        id=f"{task_id}.workspace_delete",
        source=SOURCE,
        task_id=task_id,
        ts=datetime.now(UTC),
        workspace_id=workspace_id,
    )
    await publish(js, s.workspace_requests("delete"), message, message.id)


async def _purge_task(js: JetStreamContext, record: TaskRecord, workspace: bool) -> None:
    for agent_id in record.agent_ids or (record.agent_id,):
        await js.purge_stream(s.THREADS_STREAM, subject=s.thread_filter(agent_id))
        await js.purge_stream(
            s.kv_stream(s.AGENTS_BUCKET), subject=s.kv_key(s.AGENTS_BUCKET, agent_id)
        )
        await js.purge_stream(
            s.kv_stream(s.SUMMARIES_BUCKET), subject=s.kv_key(s.SUMMARIES_BUCKET, agent_id)
        )
        await js.purge_stream(
            s.kv_stream(s.TOOL_CALLS_BUCKET), subject=s.kv_filter(s.TOOL_CALLS_BUCKET, agent_id)
        )
        # The edge's claim for the agent (`edge/pending.py`, read-your-writes before it starts).
        await js.purge_stream(
            s.kv_stream(s.IDEMPOTENCY_BUCKET), subject=s.kv_key(s.IDEMPOTENCY_BUCKET, agent_id)
        )
    await js.purge_stream(s.EVENTS_STREAM, subject=s.events_of_task(record.task_id))
    now = datetime.now(UTC)
    if workspace:
        await _delete_workspace(js, record.task_id, record.workspace_id or record.task_id)
    deleted = Event(
        id=f"{record.task_id}.deleted",
        type="task.deleted",
        ts=now,
        task_id=record.task_id,
        agent_id=record.agent_id,
        data={"status": record.status},
    )
    await publish(js, s.event(record.task_id, record.agent_id, "task.deleted"), deleted, deleted.id)
    await js.purge_stream(
        s.kv_stream(s.TASKS_BUCKET), subject=s.kv_key(s.TASKS_BUCKET, record.task_id)
    )
