"""End to end: a task with a budget, through every real process and a fake OpenAI server.

The prices come from the config file; the agent stops before the call that could overspend,
asks a human over the edge, and goes on when the budget is raised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import start_system
from tests.fakes import shapes
from tests.fakes.server import FakeServer, Recorded, Reply, serve_in_thread
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

CONFIG = """
[llm]
provider = "openai"
model = "gpt-priced"
max_output_tokens = 500

[llm.prices."gpt-priced"]
input_per_mtok = 1000.0
output_per_mtok = 1000.0
"""
USAGE = (400, 100)  # $0.50 per call at $1000 per million tokens
BUDGET = 2.0


def player(request: Recorded) -> Reply:
    """Writes a file per call; completes once it has seen five tool results."""
    messages = (request.body or {}).get("messages", ())
    results = sum(1 for m in messages if m.get("role") == "tool")
    if results >= 5:
        call = ("done", "complete_task", {"summary": "five files"})
    else:
        call = (f"w{results}", "write_file", {"path": f"f{results}.txt", "content": "x"})
    return Reply(body=shapes.openai_reply(None, [call], usage=USAGE, model="gpt-priced"))


async def test_budget_stops_the_agent_until_a_human_raises_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A priced task stops before it could overspend and completes once a human raises budget."""
    config = tmp_path / "agentops.toml"
    config.write_text(CONFIG)
    with serve_in_thread(FakeServer(player)) as server:
        monkeypatch.setenv("AGENTOPS_CONFIG", str(config))
        monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        system = start_system(tmp_path / "data")
        try:
            async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
                created = (
                    await http.post(
                        "/tasks",
                        json={
                            "agent_type": "backend_developer",
                            "description": "Write five files",
                            "budget_usd": BUDGET,
                        },
                    )
                ).json()
                agent_url = f"/agents/{created['agent_id']}"

                async def asking() -> dict[str, Any] | None:
                    status = (await http.get(f"{agent_url}/status")).json()
                    return status if status.get("status") == "awaiting_human" else None

                status = await eventually(asking, timeout=60, what="budget question")
                question = status["human_request"]
                assert question["reason"] == "budget"
                details = question["details"]
                calls_so_far = len(server.requests)
                assert details["spent_usd"] == pytest.approx(0.5 * calls_so_far)
                assert details["spent_usd"] <= BUDGET
                assert details["spent_usd"] + details["next_call_estimate_usd"] > BUDGET
                task = (await http.get(f"/tasks/{created['task_id']}")).json()
                assert task["status"] == "awaiting_human"
                assert task["cost_usd"] == pytest.approx(details["spent_usd"])

                bad = await http.post(f"{agent_url}/human-response", json={"response": "sure"})
                assert bad.status_code == 400 and "budget_usd" in bad.json()["error"]["message"]
                raised = await http.post(
                    f"{agent_url}/human-response", json={"response": {"budget_usd": 100}}
                )
                assert raised.status_code in (200, 202), raised.text

                async def finished() -> dict[str, Any] | None:
                    record = (await http.get(f"/tasks/{created['task_id']}")).json()
                    return record if record["status"] in ("completed", "failed") else None

                record = await eventually(finished, timeout=60, what="task finished")
            assert record["status"] == "completed", record
            assert record["budget_usd"] == 100
            assert record["cost_usd"] == pytest.approx(0.5 * len(server.requests))
            assert len(server.requests) == 6
        finally:
            system.stop()
