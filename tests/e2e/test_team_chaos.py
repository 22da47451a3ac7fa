"""kill -9 at hand-offs (DESIGN §4c): while a parent waits for a child, while a child starts,
and while a workflow moves from stage to stage, each process in turn (nats-server included).
Every tree and workflow finishes, and no child or stage runs twice. The whole matrix runs
under `-m chaos`; one case of each scenario runs by default."""

from __future__ import annotations

import os
import signal
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import System
from tests.e2e.test_system import ws_events
from tests.e2e.test_teams_e2e import diamond, workflow
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

VICTIMS = (
    "orchestrator",
    "agent-tech_lead",
    "agent-backend_developer",
    "tool-executor",
    "nats-server",
)


async def kill(system: System, victim: str) -> None:
    old = system.pids()[victim]
    os.kill(old, signal.SIGKILL)

    async def restarted() -> bool:
        pid = system.pids().get(victim)
        return pid is not None and pid != old

    await eventually(restarted, timeout=30, what=f"{victim} restarted")


async def _get(http: httpx.AsyncClient, path: str) -> dict[str, Any] | None:
    try:
        resp = await http.get(path)
    except httpx.HTTPError:  # the edge may be reconnecting to a restarted nats-server
        return None
    return resp.json() if resp.status_code == 200 else None


async def tree_under_kill(system: System, victim: str, when: str) -> None:
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as http:
        created = (await http.post("/tasks", json={"agent_type": "tech_lead",
                                                   "description": "Build a todo app"})).json()  # fmt: skip
        task_id = created["task_id"]

        async def moment() -> bool:
            record = await _get(http, f"/tasks/{task_id}")
            if record is None:
                return False
            if when == "child starts":
                return len(record["children"]) >= 2
            return len(record["children"]) >= 1 and record["status"] == "running"

        await eventually(moment, timeout=60, what=when)
        await kill(system, victim)

        async def done() -> dict[str, Any] | None:
            record = await _get(http, f"/tasks/{task_id}")
            return record if record and record["status"] in ("completed", "failed") else None

        record = await eventually(done, timeout=180, what="the tree done")
        children = [await _get(http, f"/tasks/{c}") for c in record["children"]]
    assert record["status"] == "completed", record["error"]
    assert [c["agent_type"] for c in children if c] == [
        "backend_developer", "frontend_developer", "devops_engineer"
    ]  # fmt: skip
    events = await ws_events(system, f"since=0&task_id={task_id}", "task.completed")
    delegations = [
        e for e in events if e["type"] == "tool.call" and e["data"]["name"] == "delegate_task"
    ]
    assert len(delegations) == 3, "a delegation was made twice"


async def workflow_under_kill(system: System, victim: str) -> None:
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as http:
        wf = (await http.post("/workflows", json=diamond(None, delay_ms=100))).json()["workflow_id"]

        async def advancing() -> bool:
            body = await _get(http, f"/workflows/{wf}")
            return body is not None and body["stages"][0]["status"] == "completed"

        await eventually(advancing, timeout=60, what="stage a completed")
        await kill(system, victim)
        done = await workflow(http, wf, "completed", "failed", "cancelled")
    assert done["status"] == "completed"
    events = await ws_events(system, f"since=0&task_id={wf}", "workflow.completed")
    started = [e["data"]["stage_id"] for e in events if e["type"] == "workflow.stage_started"]
    assert sorted(started) == ["a", "b", "c", "d"], "a stage started twice or never"


async def test_smoke_kill_9_of_the_tech_lead_while_it_waits(system: System) -> None:
    """kill -9 of the tech lead's process while it waits for a child: the tree completes."""
    await tree_under_kill(system, "agent-tech_lead", "parent waits")


@pytest.mark.chaos
@pytest.mark.parametrize("when", ["parent waits", "child starts"])
@pytest.mark.parametrize("victim", VICTIMS)
async def test_kill_9_of_any_process_in_a_tree(system: System, victim: str, when: str) -> None:
    """kill -9 of each process while a parent waits or a child starts: the tree completes once."""
    await tree_under_kill(system, victim, when)


@pytest.mark.chaos
@pytest.mark.parametrize("victim", VICTIMS)
async def test_kill_9_of_any_process_while_a_workflow_advances(system: System, victim: str) -> None:
    """kill -9 of each process as a workflow hands over: every stage runs once."""
    await workflow_under_kill(system, victim)
