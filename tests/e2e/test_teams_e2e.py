"""Teams end to end (DESIGN §4c): a workflow with a diamond of stages and an approval gate,
a refused gate, bad workflows refused naming the field, and kill -9 of the orchestrator while
a workflow hands work from stage to stage."""

from __future__ import annotations

import os
import signal
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import System
from tests.e2e.test_system import ws_events
from tests.helpers import eventually

pytestmark = pytest.mark.e2e


def writes(path: str, delay_ms: int = 0) -> dict[str, Any]:
    script = [{"tool": "write_file", "args": {"path": path, "content": f"{path}\n"}}]
    return {"mock": {"delay_ms": delay_ms, "script": script}}


def diamond(gate: str | None = "d", delay_ms: int = 0) -> dict[str, Any]:
    def stage(sid: str, deps: list[str], agent_type: str = "backend_developer") -> dict[str, Any]:
        return {"id": sid, "agent_type": agent_type, "description": f"stage {sid}",
                "context": writes(f"{sid}.txt", delay_ms), "depends_on": deps,
                "approval": sid == gate}  # fmt: skip

    return {"name": "diamond", "stages": [
        stage("a", []), stage("b", ["a"], "frontend_developer"), stage("c", ["a"], "devops_engineer"),
        stage("d", ["b", "c"])]}  # fmt: skip


async def workflow(http: httpx.AsyncClient, workflow_id: str, *statuses: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body = (await http.get(f"/workflows/{workflow_id}")).json()
        return body if body.get("status") in statuses else None

    return await eventually(probe, timeout=90, what=f"workflow {statuses}")


async def test_a_diamond_workflow_runs_in_order_with_its_gate(system: System) -> None:
    """a, then b and c, then d once approved; every stage's file is in the one workspace."""
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as http:
        created = await http.post("/workflows", json=diamond())
        assert created.status_code == 201, created.text
        wf = created.json()["workflow_id"]
        waiting = await workflow(http, wf, "awaiting_human")
        early = await http.post(f"/workflows/{wf}/human-response", json={"response": "maybe"})
        approved = await http.post(f"/workflows/{wf}/human-response",
                                   json={"response": {"approved": True}})  # fmt: skip
        done = await workflow(http, wf, "completed", "failed", "cancelled")
        listed = (await http.get("/workflows")).json()
    assert waiting["awaiting_approval"] == "d"
    assert [s["status"] for s in waiting["stages"]] == ["completed"] * 3 + ["pending"]
    assert early.status_code == 400 and approved.status_code in (200, 202)
    assert done["status"] == "completed"
    assert wf in [w["workflow_id"] for w in listed["workflows"]]
    events = await ws_events(system, f"since=0&task_id={wf}", "workflow.completed")
    order = [e["data"]["stage_id"] for e in events if e["type"] == "workflow.stage_started"]
    assert order[0] == "a" and sorted(order[1:3]) == ["b", "c"] and order[3] == "d"
    files = sorted(p.name for p in (system.data_dir / "workspaces" / wf).iterdir())
    assert files == ["a.txt", "b.txt", "c.txt", "d.txt"]


async def test_a_refused_gate_cancels_the_rest(system: System) -> None:
    """Refusing b's gate cancels the workflow: b cancelled, c cancelled or done, d skipped."""
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as http:
        wf = (await http.post("/workflows", json=diamond("b", delay_ms=400))).json()["workflow_id"]
        await workflow(http, wf, "awaiting_human")
        refused = await http.post(f"/workflows/{wf}/human-response",
                                  json={"response": {"approved": False, "comment": "no"}})  # fmt: skip
        done = await workflow(http, wf, "cancelled")
    assert refused.status_code in (200, 202)
    statuses = {s["id"]: s["status"] for s in done["stages"]}
    assert statuses["a"] == "completed" and statuses["b"] == "cancelled"
    assert statuses["d"] == "skipped" and statuses["c"] in (
        "cancelled",
        "completed",
        "queued",
        "running",
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"depends_on": ["d"]}, "stages"),  # a -> d -> b -> a: a cycle
        ({"depends_on": ["nope"]}, "stages.0.depends_on.0"),
        ({"agent_type": "qa_engineer"}, "stages.0.agent_type"),
        ({"id": "b"}, "stages.1.id"),
    ],
)
async def test_a_bad_workflow_is_a_422_naming_the_field(
    system: System, change: dict[str, Any], field: str
) -> None:
    """A cycle, an unknown stage or agent type, a duplicate id: 422 with the field."""
    body = diamond()
    body["stages"][0] = {**body["stages"][0], **change}
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as http:
        resp = await http.post("/workflows", json=body)
    assert resp.status_code == 422, resp.text
    fields = [d["field"] for d in resp.json()["error"]["details"]]
    assert field in fields


async def test_kill_9_of_the_orchestrator_while_stages_hand_over(system: System) -> None:
    """kill -9 of the orchestrator as a workflow moves from stage to stage: every stage runs
    once and the workflow completes."""
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as http:
        wf = (await http.post("/workflows", json=diamond(None, delay_ms=150))).json()["workflow_id"]

        async def first_done() -> bool:
            body = (await http.get(f"/workflows/{wf}")).json()
            return body["stages"][0]["status"] == "completed"

        await eventually(first_done, timeout=60, what="stage a completed")
        old = system.pids()["orchestrator"]
        os.kill(old, signal.SIGKILL)
        done = await workflow(http, wf, "completed", "failed", "cancelled")
    assert done["status"] == "completed"
    events = await ws_events(system, f"since=0&task_id={wf}", "workflow.completed")
    started = [e["data"]["stage_id"] for e in events if e["type"] == "workflow.stage_started"]
    assert sorted(started) == ["a", "b", "c", "d"]


async def test_a_tech_lead_delegates_to_three_types_in_one_workspace(system: System) -> None:
    """tech_lead's run delegates API, page and deployment: three child tasks of three types,
    all done in the lead's workspace, each seeing the earlier ones' files, and the lead's
    summary names each; the tree's cost is on the parent."""
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as http:
        created = (await http.post("/tasks", json={"agent_type": "tech_lead",
                                                   "description": "Build a todo app"})).json()  # fmt: skip
        task_id = created["task_id"]

        async def done() -> dict[str, Any] | None:
            record = (await http.get(f"/tasks/{task_id}")).json()
            return record if record["status"] in ("completed", "failed") else None

        record = await eventually(done, timeout=120, what="the tech lead done")
        children = [(await http.get(f"/tasks/{c}")).json() for c in record["children"]]
        files = (await http.get(f"/tasks/{task_id}/files")).json()["files"]
        thread = (await http.get(f"/agents/{children[1]['agent_id']}/state")).json()["thread"]
    assert record["status"] == "completed", record["error"]
    assert [c["agent_type"] for c in children] == ["backend_developer", "frontend_developer",
                                                   "devops_engineer"]  # fmt: skip
    assert all(c["status"] == "completed" and c["parent_task_id"] == task_id for c in children)
    assert {"api.py", "test_api.py", "index.html", "Dockerfile", "compose.yaml"} <= {
        f["path"] for f in files
    }
    listed = next(i for i in thread if i["kind"] == "tool_result" and i["name"] == "list_files")
    assert "api.py" in str(listed["result"])  # the frontend saw the backend's files
    assert all(c["task_id"] in record["result"]["summary"] for c in children)
    assert record["cost_usd_total"] >= record["cost_usd"]
