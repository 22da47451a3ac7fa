"""Two replicas of one agent type share its lanes: every task completes, each step runs once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import System
from tests.e2e.test_system import SEED, create, steps, task_status, ws_events
from tests.helpers import eventually_sync

pytestmark = pytest.mark.e2e


@pytest.fixture
def replica(system: System, tmp_path: Path) -> Iterator[Path]:
    """A second backend_developer agent process on the system's NATS; yields its log."""
    log_path = tmp_path / "replica.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentops.services.agent", "--agent-type", "backend_developer"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "NATS_URL": system.nats_url,
                "AGENTOPS_DATA_DIR": str(system.data_dir),  # its credential
                "AGENTOPS_LOG_LEVEL": "info",
            },
        )
    try:
        eventually_sync(
            lambda: b"process.started" in log_path.read_bytes() or proc.poll() is not None,
            timeout=30,
            what="the replica started",
        )
        assert proc.poll() is None, log_path.read_text()
        yield log_path
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def test_two_replicas_of_an_agent_type_complete_every_task_once(
    system: System, replica: Path
) -> None:
    """Two replicas of an agent type complete every task; no step or tool call runs twice."""
    # Consecutive messages of one agent land on either replica (each with its own cache of
    # states); no message may be lost to a stale cache.
    n, tasks = 10, 8
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        created = await asyncio.gather(
            *(create(http, {**SEED, "context": steps(n)}) for _ in range(tasks))
        )
        for task in created:
            await task_status(http, task["task_id"], "completed")
    handled = await asyncio.to_thread(replica.read_bytes)
    assert b"message.handled" in handled, "the replica handled nothing"
    for task in created:
        lines = (system.data_dir / "workspaces" / task["task_id"] / "log.txt").read_text()
        assert lines.splitlines() == [f"line {i}" for i in range(n)]
        events = await ws_events(system, f"since=0&task_id={task['task_id']}", "task.completed")
        step_numbers = [e["data"]["step"] for e in events if e["type"] == "agent.step"]
        assert step_numbers == list(range(1, n + 2))
