"""Deleting a finished task's data: what `DELETE /tasks/{id}` and the retention sweep remove.

Everything below a root task goes: each agent's thread, head and tool-call claims, the task's
events and its workspace, then the task record. Every step is idempotent (a stream purge by
subject, a work message with a fixed id), so a deletion cut short by a crash is completed by
the redelivered message, and the record, the last thing removed, keeps saying `deleting`
until then.
"""

from __future__ import annotations

from datetime import UTC, datetime

from nats.js import JetStreamContext

from agentops.bus.connection import publish
from agentops.core.state import TaskRecord
from agentops.protocol import subjects as s
from agentops.protocol.messages import DeleteWorkspace, Event

SOURCE = "orchestrator"


async def delete_task_data(js: JetStreamContext, record: TaskRecord) -> None:
    """Remove what belongs to `record` (marked `deleting`), the record last."""
    for agent_id in record.agent_ids or (record.agent_id,):
        await js.purge_stream(s.THREADS_STREAM, subject=s.thread_filter(agent_id))
        await js.purge_stream(
            s.kv_stream(s.AGENTS_BUCKET), subject=s.kv_key(s.AGENTS_BUCKET, agent_id)
        )
        await js.purge_stream(
            s.kv_stream(s.TOOL_CALLS_BUCKET), subject=s.kv_filter(s.TOOL_CALLS_BUCKET, agent_id)
        )
    await js.purge_stream(s.EVENTS_STREAM, subject=s.events_of_task(record.task_id))
    now = datetime.now(UTC)
    workspace = DeleteWorkspace(
        id=f"{record.task_id}.workspace_delete",
        source=SOURCE,
        task_id=record.task_id,
        agent_id=record.agent_id,
        ts=now,
        workspace_id=record.task_id,
    )
    await publish(js, s.workspace_requests("delete"), workspace, workspace.id)
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
