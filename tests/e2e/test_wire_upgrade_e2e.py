"""Rolling upgrades: a newer version's messages carry fields this one does not know.

Every work message type on its own subject and every event type on the events stream, each
with fields added (at the top and inside nested objects), reach a running system: none is
dead-lettered as undecodable, no process restarts, the WS replay still reads, and tasks (one
submitted by a "newer" client straight on the task inbox) complete.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, get_args

import httpx
import nats
import pytest

from agentops.bus.connection import ERROR_MESSAGE, MSG_ID
from agentops.protocol import subjects as s
from agentops.protocol.messages import EVENT_ADAPTER, WORK_ADAPTER, EventType
from tests import fuzz
from tests.e2e.conftest import System
from tests.e2e.test_system import SEED, steps, ws_events
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

NEW = {"x_added_in_a_later_version": {"nested": [1, 2]}, "x_flag": True}
FREE_FORM = {"arguments", "context", "data", "response"}  # JSON objects kept as they are


def newer(doc: Any) -> Any:
    """`doc` with NEW's fields in it and in every model inside it."""
    if isinstance(doc, dict):
        return {**{k: v if k in FREE_FORM else newer(v) for k, v in doc.items()}, **NEW}
    if isinstance(doc, list):
        return [newer(v) for v in doc]
    return doc


def event_doc(event_type: str, task_id: str) -> dict[str, Any]:
    return {"id": f"up.{event_type}", "type": event_type, "task_id": task_id,
            "agent_id": None, "ts": datetime.now(UTC).isoformat(), "data": {"k": 1}}  # fmt: skip


def test_every_wire_message_decodes_the_same_with_unknown_fields() -> None:
    """Each work message and event type, with fields added at every level, decodes to the
    same message as without them."""
    for n, kind in enumerate(fuzz.message_types()):
        doc = fuzz.template(kind, "task_up", "agent_up", n)
        assert WORK_ADAPTER.validate_python(newer(doc)) == WORK_ADAPTER.validate_python(doc)
    for event_type in get_args(EventType):
        doc = event_doc(event_type, "task_up")
        assert EVENT_ADAPTER.validate_python(newer(doc)).type == event_type


async def test_a_running_system_takes_newer_messages_on_every_subject(system: System) -> None:
    """Newer messages of every type on every subject: none dead-lettered as undecodable, no
    restart, the events replay reads, and work goes on (a newer task.submit completes)."""
    nc = await nats.connect(system.nats_url, **system.admin)
    js = nc.jetstream(timeout=10)
    try:
        dlq_start = (await js.stream_info(s.DLQ_STREAM)).state.last_seq
        for n, kind in enumerate(fuzz.message_types()):
            task_id, agent_id = f"task_up{n}", f"agent_up{n}"
            doc = newer(fuzz.template(kind, task_id, agent_id, n))
            subject = fuzz.subject_for(kind, task_id, agent_id, "backend_developer")
            await js.publish(subject, json.dumps(doc).encode(), headers={MSG_ID: f"up.{n}"})
        for event_type in get_args(EventType):
            doc = newer(event_doc(event_type, "task_upevents"))
            subject = s.event("task_upevents", None, event_type)
            await js.publish(subject, json.dumps(doc).encode(), headers={MSG_ID: doc["id"]})
        submit = newer(
            dict(
                type="task.submit",
                id="up.submit",
                task_id="task_upnew",
                agent_id="agent_upnew",
                ts=datetime.now(UTC).isoformat(),
                agent_type="backend_developer",
                description="from a newer client",
            )
        )
        submit["context"] = steps(2)  # the mock's script as it reads it
        await js.publish(
            s.task_inbox("task_upnew", "task.submit"), json.dumps(submit).encode(),
            headers={MSG_ID: "up.submit"},
        )  # fmt: skip

        async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
            created = (await http.post("/tasks", json={**SEED, "context": steps(2)})).json()
            for task_id in (created["task_id"], "task_upnew"):

                async def done(task_id: str = task_id) -> bool:
                    resp = await http.get(f"/tasks/{task_id}")
                    return resp.status_code == 200 and resp.json()["status"] == "completed"

                await eventually(done, timeout=60, interval=0.2, what=f"{task_id} completed")
        replayed = await ws_events(system, "since=0&task_id=task_upevents", "task.failed")
        assert {e["type"] for e in replayed} >= {"task.created", "task.failed"}

        dlq = await js.stream_info(s.DLQ_STREAM)
        undecodable = []
        for seq in range(dlq_start + 1, dlq.state.last_seq + 1):
            stored = await js.get_msg(s.DLQ_STREAM, seq)
            reason = (stored.headers or {}).get(ERROR_MESSAGE, "")
            if reason.startswith("undecodable"):  # not: decoded, then refused where it was sent
                undecodable.append(f"{stored.data[:60]!r}: {reason}")
        assert undecodable == []
    finally:
        await nc.close()
    assert "child.restarting" not in system.supervisor_log()
