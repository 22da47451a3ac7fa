"""End to end: a whole task through every real process, the gateway on a local fake provider.

The fake plays a two-step developer: `write_file`, then (once it sees the tool result)
`complete_task`, through the provider's own tool-call wire format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import start_system
from tests.fakes import shapes
from tests.fakes.server import FakeServer, Recorded, Reply, serve_in_thread
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

KEY = "sk-e2e-SECRET-5555"
WRITE = {"path": "hello.py", "content": "print('hello')\n"}
DONE = {"summary": "Wrote hello.py", "artifacts": ["hello.py"]}


def openai_player(request: Recorded) -> Reply:
    body = request.body or {}
    assert {t["function"]["name"] for t in body.get("tools", ())} >= {"write_file", "complete_task"}
    answered = any(m.get("role") == "tool" for m in body.get("messages", ()))
    call = ("call_done", "complete_task", DONE) if answered else ("call_write", "write_file", WRITE)
    return Reply(body=shapes.openai_reply(None, [call], usage=(100, 20), model="gpt-4o-mini"))


def anthropic_player(request: Recorded) -> Reply:
    body = request.body or {}
    assert {t["name"] for t in body.get("tools", ())} >= {"write_file", "complete_task"}
    blocks = [b for m in body.get("messages", ()) if m["role"] == "user" for b in m["content"]]
    answered = any(b.get("type") == "tool_result" for b in blocks)
    call = (
        ("toolu_done", "complete_task", DONE) if answered else ("toolu_write", "write_file", WRITE)
    )
    return Reply(body=shapes.anthropic_reply("On it.", [call], usage=(200, 40)))


@pytest.fixture
def provider_system(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, FakeServer]]:
    provider: str = request.param
    player: Callable[[Recorded], Reply] = {"openai": openai_player, "anthropic": anthropic_player}[
        provider
    ]
    with serve_in_thread(FakeServer(player)) as server:
        monkeypatch.setenv("AGENTOPS_LLM_PROVIDER", provider)
        if provider == "openai":
            monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
            monkeypatch.setenv("OPENAI_API_KEY", KEY)
        else:
            monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
            monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        system = start_system(tmp_path / "data")
        try:
            yield system, server
        finally:
            system.stop()


@pytest.mark.parametrize("provider_system", ["openai", "anthropic"], indirect=True)
async def test_task_completes_through_a_real_provider_wire_format(
    provider_system: tuple[Any, FakeServer],
) -> None:
    """Tool calls over the provider's wire format complete the task, reported usage as its cost."""
    # write_file then complete_task: the file exists, and the usage each reply reported reaches
    # the agent's state and the task's cost.
    system, server = provider_system
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        resp = await http.post(
            "/tasks", json={"agent_type": "backend_developer", "description": "Write hello.py"}
        )
        assert resp.status_code == 201, resp.text
        created = resp.json()

        async def finished() -> dict[str, Any] | None:
            record = (await http.get(f"/tasks/{created['task_id']}")).json()
            return record if record.get("status") in ("completed", "failed") else None

        record = await eventually(finished, timeout=60, what="task finished")
        state = (await http.get(f"/agents/{created['agent_id']}/state")).json()
    assert record["status"] == "completed", record
    assert record["result"]["summary"] == "Wrote hello.py"
    workspace = system.data_dir / "workspaces" / created["task_id"]
    assert (workspace / "hello.py").read_text() == "print('hello')\n"
    assert len(server.requests) == 2
    per_call = (100, 20) if server.requests[0].path == "/v1/chat/completions" else (200, 40)
    usage = state["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (2 * per_call[0], 2 * per_call[1])
    assert usage["cost_usd"] > 0 and record["cost_usd"] == pytest.approx(usage["cost_usd"])
    logs = "".join(p.read_text() for p in (system.data_dir / "logs").glob("*.log"))
    assert KEY not in logs and KEY not in str(state)
