"""End to end: nats-server killed with many tasks in flight; every lane keeps moving.

After a restart, nats-server 2.15 can leave a push consumer with a message pending and never
send it (about one restart in three with 20 tasks in flight, on a system that just started).
The consumers' watchdog (`bus/consumer.py: Consumer._watch`) kicks such a lane; without it
the task waits forever.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import start_system
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

TYPES = ("backend_developer", "devops_engineer", "frontend_developer")
TASKS, STEPS = 18, 40


def appends(tag: str) -> dict[str, Any]:
    """A mock script of appends: each call ran exactly once iff its line is there once."""
    script = [
        {"tool": "write_file", "args": {"path": "log.txt", "content": f"{tag} {i}\n", "mode": "append"}}
        for i in range(STEPS)
    ]  # fmt: skip
    return {"mock": {"script": script, "delay_ms": 20}}


async def test_kill_9_of_nats_server_with_many_tasks_in_flight_stalls_no_task(
    tmp_path: Path,
) -> None:
    """SIGKILL nats-server under 18 running tasks: every task completes, no call runs twice."""
    system = start_system(tmp_path / "data")  # a fresh system: where the stall shows most
    try:
        async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
            created = []
            for i in range(TASKS):
                body = {"agent_type": TYPES[i % 3], "description": f"task {i}",
                        "context": appends(f"T{i}"), "max_steps": STEPS + 5}  # fmt: skip
                resp = await http.post("/tasks", json=body)
                assert resp.status_code == 201, resp.text
                created.append(resp.json())

            async def under_way() -> bool:
                steps = [
                    (await http.get(f"/agents/{c['agent_id']}/status")).json().get("current_step")
                    or 0
                    for c in created
                ]
                return sum(step >= 3 for step in steps) >= TASKS // 2

            await eventually(under_way, timeout=60, what="half the tasks under way")
            old = system.pids()["nats-server"]
            os.kill(old, signal.SIGKILL)

            async def finished() -> list[str] | None:
                statuses = []
                for c in created:
                    try:
                        statuses.append((await http.get(f"/tasks/{c['task_id']}")).json()["status"])
                    except (httpx.HTTPError, KeyError):
                        return None
                return statuses if all(st == "completed" for st in statuses) else None

            # A stalled lane is kicked ~6 s after the kill: the message in flight then is
            # unacked for its ack wait (3 s), then two looks 1.5 s apart see the stall.
            await eventually(finished, timeout=120, interval=0.5, what="every task completed")
        for c in created:
            lines = (system.data_dir / "workspaces" / c["task_id"] / "log.txt").read_text()
            assert len(lines.splitlines()) == len(set(lines.splitlines())), "a call ran twice"
    finally:
        await asyncio.to_thread(system.stop)
