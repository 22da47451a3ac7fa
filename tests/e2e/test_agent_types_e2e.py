"""End to end: a type defined in a file of `agentops up --agents-dir` runs a task for real.

Only that type is routed to a local fake OpenAI server (its type file says `provider =
"openai"`; OPENAI_BASE_URL points at the fake), so the requests its agent process sends can be
read: they carry the type's task prompt template and temperature. The shipped types stay on
the mock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import System, start_system
from tests.fakes import shapes
from tests.fakes.server import FakeServer, Recorded, Reply, serve_in_thread
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

QA_TYPE = """
name = "QA Engineer"
role = "Writes and runs test plans for what the others built."
prompt_file = "qa_engineer.md"
task_prompt_template = "QA assignment: {description}\\nFacts (JSON): {context}"
capabilities = ["testing"]
allowed_tools = ["list_files", "read_file", "write_file", "complete_task"]
max_steps = 6
temperature = 0.65
provider = "openai"
model = "qa-model-1"
"""
PLAN = {"path": "TEST_PLAN.md", "content": "1. Log in with a wrong password: refused.\n"}
DONE = {"summary": "Wrote TEST_PLAN.md", "artifacts": ["TEST_PLAN.md"]}


def qa_player(request: Recorded) -> Reply:
    body = request.body or {}
    answered = any(m.get("role") == "tool" for m in body.get("messages", ()))
    call = ("call_done", "complete_task", DONE) if answered else ("call_plan", "write_file", PLAN)
    return Reply(body=shapes.openai_reply(None, [call], usage=(50, 10), model="qa-model-1"))


@pytest.fixture
def qa_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[System, FakeServer]]:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "qa_engineer.toml").write_text(QA_TYPE)
    (agents / "qa_engineer.md").write_text("You are a meticulous QA engineer.\n")
    with serve_in_thread(FakeServer(qa_player)) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-e2e-qa")
        monkeypatch.delenv("AGENTOPS_LLM_PROVIDER", raising=False)
        system = start_system(tmp_path / "data", agents_dir=agents)
        try:
            yield system, server
        finally:
            system.stop()


async def test_a_type_from_the_agents_dir_runs_with_its_template_and_temperature(
    qa_system: tuple[System, FakeServer],
) -> None:
    """The file's type is listed, has its process in /health, and its task's LLM requests carry
    its template's wording and its temperature, to its own route; the task completes."""
    system, server = qa_system
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        types = {t["agent_type"]: t for t in (await http.get("/agent-types")).json()["agent_types"]}
        assert types["qa_engineer"]["name"] == "QA Engineer"
        assert types["qa_engineer"]["temperature"] == 0.65
        assert {"backend_developer", "tech_lead"} <= set(types)
        health = (await http.get("/health")).json()
        assert health["services"]["agent-qa_engineer"] == {"status": "up", "instances": 1}
        assert health["services"]["agent-tech_lead"]["status"] == "up"

        body = {
            "agent_type": "qa_engineer",
            "description": "Test the login page",
            "context": {"url": "/login"},
        }
        resp = await http.post("/tasks", json=body)
        assert resp.status_code == 201, resp.text
        created = resp.json()

        async def finished() -> dict[str, Any] | None:
            record = (await http.get(f"/tasks/{created['task_id']}")).json()
            return record if record.get("status") in ("completed", "failed") else None

        record = await eventually(finished, timeout=60, what="qa task finished")
    assert record["status"] == "completed", record
    assert record["result"]["summary"] == "Wrote TEST_PLAN.md"
    assert (system.data_dir / "workspaces" / created["task_id"] / "TEST_PLAN.md").exists()
    assert len(server.requests) == 2
    first = server.requests[0].body
    assert first["model"] == "qa-model-1" and first["temperature"] == 0.65
    assert first["messages"][0] == {
        "role": "system",
        "content": "You are a meticulous QA engineer.",
    }
    assert first["messages"][1]["content"] == (
        f"QA assignment: Test the login page\nFacts (JSON): {json.dumps({'url': '/login'})}"
    )
    assert {t["function"]["name"] for t in first["tools"]} == {
        "list_files",
        "read_file",
        "write_file",
        "complete_task",
    }
