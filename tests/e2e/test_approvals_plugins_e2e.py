"""End to end through every real process: a tool call held for approval, and a plugin tool
that agents see without a restart and lose when its process goes away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import System, start_system
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
APPROVE_WRITES = """
[tools.approvals]
backend_developer = [{ tool = "write_file", args = { path = "*.sh" }, reason = "shell scripts" }]
"""


async def submit(http: httpx.AsyncClient, script: list[dict[str, Any]]) -> dict[str, Any]:
    resp = await http.post(
        "/tasks",
        json={
            "agent_type": "backend_developer",
            "description": "e2e",
            "context": {"mock": {"script": script}},
        },
    )
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def finished(http: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        record = (await http.get(f"/tasks/{task_id}")).json()
        return record if record.get("status") in ("completed", "failed", "cancelled") else None

    record: dict[str, Any] = await eventually(probe, timeout=60, what=f"{task_id} finished")
    return record


async def tool_results(http: httpx.AsyncClient, agent_id: str) -> list[dict[str, Any]]:
    state = (await http.get(f"/agents/{agent_id}/state")).json()
    return [i for i in state["thread"] if i["kind"] == "tool_result"]


async def test_a_held_call_runs_only_after_a_human_approves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes to *.sh wait for a human: the approved one is written, the rejected one never is."""
    config = tmp_path / "agentops.toml"
    config.write_text(APPROVE_WRITES)
    monkeypatch.setenv("AGENTOPS_CONFIG", str(config))
    system = start_system(tmp_path / "data")
    try:
        async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
            script = [
                {"tool": "write_file", "args": {"path": "notes.txt", "content": "free"}},
                {"tool": "write_file", "args": {"path": "deploy.sh", "content": "echo hi\n"}},
                {"tool": "write_file", "args": {"path": "prod.sh", "content": "rm -rf /\n"}},
            ]
            created = await submit(http, script)
            agent = f"/agents/{created['agent_id']}"
            workspace = system.data_dir / "workspaces" / created["task_id"]

            async def asking(n: int) -> dict[str, Any] | None:
                status = (await http.get(f"{agent}/status")).json()
                request = status.get("human_request")
                return (
                    request
                    if request
                    and request["reason"] == "approval"
                    and (request["details"]["arguments"]["path"] == ("deploy.sh", "prod.sh")[n])
                    else None
                )

            first = await eventually(lambda: asking(0), timeout=60, what="first approval")
            assert first["reason"] == "approval"
            assert first["details"]["tool"] == "write_file"
            assert "echo hi" in first["question"]  # the exact call is shown
            assert (workspace / "notes.txt").exists() and not (workspace / "deploy.sh").exists()

            ok = await http.post(f"{agent}/human-response", json={"response": {"approved": True}})
            assert ok.status_code in (200, 202), ok.text
            await eventually(lambda: asking(1), timeout=60, what="second approval")
            assert (workspace / "deploy.sh").read_text() == "echo hi\n"
            no = await http.post(
                f"{agent}/human-response",
                json={"response": {"approved": False, "comment": "never on prod"}},
            )
            assert no.status_code in (200, 202), no.text
            record = await finished(http, created["task_id"])
            results = await tool_results(http, created["agent_id"])
        assert record["status"] == "completed"
        assert not (workspace / "prod.sh").exists()
        refused = [r for r in results if r["error"] and r["error"]["code"] == "rejected_by_human"]
        assert len(refused) == 1 and "never on prod" in refused[0]["error"]["message"]
    finally:
        system.stop()


def start_plugin(system: System, log: Path) -> subprocess.Popen[bytes]:
    """The example plugin, with a credential `agentops init --plugin` made (and put in force)."""
    subprocess.run(
        [sys.executable, "-m", "agentops.cli", "init", "--plugin", "word_count",
         "--data-dir", str(system.data_dir)],
        check=True, capture_output=True, timeout=150,
    )  # fmt: skip
    env = {
        **os.environ,
        "NATS_URL": system.nats_url,
        "AGENTOPS_DATA_DIR": str(system.data_dir),
        "AGENTOPS_PLUGIN_TTL_S": "3",
    }
    return subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "plugins" / "word_count.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )


async def test_plugin_tool_appears_without_restart_and_goes_with_its_process(
    tmp_path: Path,
) -> None:
    """A plugin's tool is served without a restart and becomes unknown once its process dies."""
    system = start_system(tmp_path / "data")
    plugin = start_plugin(system, tmp_path / "plugin.log")
    try:
        async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
            call = [{"tool": "word_count", "args": {"text": "to be or not to be"}}]

            async def served() -> dict[str, Any] | None:
                created = await submit(http, call)
                await finished(http, created["task_id"])
                [result] = await tool_results(http, created["agent_id"])
                return result if result["ok"] else None

            result = await eventually(served, timeout=60, what="plugin tool served")
            assert result["name"] == "word_count"
            assert result["result"]["words"] == 6
            assert result["result"]["top_words"][0] == ["to", 2]

            plugin.send_signal(signal.SIGKILL)
            plugin.wait(timeout=10)

            async def gone() -> dict[str, Any] | None:
                created = await submit(http, call)
                await finished(http, created["task_id"])
                [result] = await tool_results(http, created["agent_id"])
                # Until its TTL runs out the tool is still offered, and a call is a clear
                # "no process is serving" error; then the model no longer sees it at all.
                unknown = not result["ok"] and "unknown tool" in result["error"]["message"]
                return result if unknown else None

            result = await eventually(gone, timeout=60, what="plugin tool gone")
            assert "unknown tool 'word_count'" in result["error"]["message"]
    finally:
        if plugin.poll() is None:
            plugin.kill()
            plugin.wait(timeout=10)
        system.stop()
