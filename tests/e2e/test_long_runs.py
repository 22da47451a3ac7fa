"""Long runs end to end (DESIGN §4a): a run far past one message's size completes, kill -9 of
the agent process at random points of a long run loses and repeats nothing, a message that
cannot be applied fails its task visibly, and finished tasks can be deleted."""

from __future__ import annotations

import os
import random
import signal
from typing import Any

import httpx
import nats
import pytest

from agentops.protocol import subjects as s
from tests.e2e.conftest import System
from tests.e2e.test_system import SEED, create, steps, task_status, ws_events
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

BIG_OUTPUT = 60_000


def printing(n: int, size: int) -> dict[str, Any]:
    """A mock script of n `execute_code` calls that each print `size` characters."""
    code = f"print('x' * {size})"
    entry = {"tool": "execute_code", "args": {"language": "python", "code": code}}
    return {"mock": {"delay_ms": 0, "script": [entry] * n}}


async def thread_of(http: httpx.AsyncClient, agent_id: str) -> list[dict[str, Any]]:
    """Every thread item, read a page at a time."""
    items: list[dict[str, Any]] = []
    while True:
        page = (await http.get(f"/agents/{agent_id}/thread?offset={len(items)}&limit=97")).json()
        items += page["items"]
        if len(items) >= page["total"]:
            assert len(items) == page["total"]
            return items


async def test_a_run_of_150_steps_each_printing_60_kb_completes(system: System) -> None:
    """150 tool results of 60 KB (9 MB of thread, past nats max_payload) complete; the state and
    its pages return the whole thread."""
    n = 150
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as http:
        body = {**SEED, "context": printing(n, BIG_OUTPUT), "max_steps": n + 1}
        created = await create(http, body)
        record = await task_status(http, created["task_id"], "completed", "failed")
        assert record["status"] == "completed", record["error"]
        state = (await http.get(f"/agents/{created['agent_id']}/state")).json()
        paged = await thread_of(http, created["agent_id"])
        head = (await http.get(f"/agents/{created['agent_id']}/status")).json()
    results = [i for i in state["thread"] if i["kind"] == "tool_result"]
    assert len(results) == n and all(r["ok"] for r in results)
    assert all(len(r["result"]["stdout"]) > BIG_OUTPUT for r in results)
    assert paged == state["thread"]
    assert head["tool_calls"] == n + 1 and head["errors"] == 0


async def test_kill_9_of_the_agent_at_random_points_of_a_long_run(system: System) -> None:
    """kill -9 of the agent process three times during a 300-step run: the run completes, the
    thread has every step once, in order, and every side effect ran at most once."""
    n = 300
    rng = random.Random(12)
    victim = "agent-backend_developer"
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as http:
        body = {**SEED, "context": steps(n, path="long.txt", delay_ms=5), "max_steps": n + 1}
        created = await create(http, body)
        for _ in range(3):
            target = rng.randint(20, 260)

            async def reached(at: int = target) -> bool:
                status = (await http.get(f"/agents/{created['agent_id']}/status")).json()
                return status.get("current_step", 0) >= at or status.get("status") == "completed"

            await eventually(reached, timeout=120, what=f"step {target}")
            old = system.pids()[victim]
            os.kill(old, signal.SIGKILL)

            async def restarted(old: int = old) -> bool:
                pid = system.pids().get(victim)
                return pid is not None and pid != old

            await eventually(restarted, timeout=30, what="agent process restarted")
        record = await task_status(http, created["task_id"], "completed", "failed")
        assert record["status"] == "completed", record["error"]
        items = await thread_of(http, created["agent_id"])
    assistants = [i["step"] for i in items if i["kind"] == "assistant"]
    assert assistants == list(range(1, n + 2)), "a step is missing or repeated"
    calls = [c["id"] for i in items if i["kind"] == "assistant" for c in i["tool_calls"]]
    results = [i["call_id"] for i in items if i["kind"] == "tool_result"]
    assert len(calls) == len(set(calls)) == n + 1 and results == calls[:-1]
    interrupted = {
        int(i["step"]) - 1
        for i in items
        if i["kind"] == "tool_result" and (i["error"] or {}).get("code") == "interrupted"
    }
    lines = (system.data_dir / "workspaces" / created["task_id"] / "long.txt").read_text()
    written = lines.splitlines()
    assert len(written) == len(set(written)), "a tool call ran twice"
    assert [x for x in written if int(x.split()[1]) not in interrupted] == [
        f"line {i}" for i in range(n) if i not in interrupted
    ]


async def test_a_message_that_cannot_be_applied_fails_the_task(system: System) -> None:
    """An agent whose stored thread lost an item cannot apply its next message: after the
    retries it fails, and so does its task, with reason internal_error; nothing stays running."""
    question = {"tool": "request_human_input", "args": {"question": "Go on?"}}
    write = {"tool": "write_file", "args": {"path": "a.txt", "content": "a"}}
    body = {**SEED, "context": {"mock": {"script": [write, question]}}}
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as http:
        created = await create(http, body)
        agent_id = created["agent_id"]

        async def asking() -> bool:
            status = (await http.get(f"/agents/{agent_id}/status")).json()
            return status.get("status") == "awaiting_human"

        await eventually(asking, timeout=60, what="the question")
        # Lose item 1 of the thread, and make the agent process read it again (a new process).
        nc = await nats.connect(system.nats_url, **system.admin)
        await nc.jetstream().purge_stream(s.THREADS_STREAM, subject=s.thread_item(agent_id, 1))
        await nc.close()
        old = system.pids()["agent-backend_developer"]
        os.kill(old, signal.SIGKILL)
        answer = await http.post(f"/agents/{agent_id}/human-response", json={"response": "yes"})
        assert answer.status_code in (200, 202), answer.text
        record = await task_status(http, created["task_id"], "failed")
        events = await ws_events(system, f"since=0&task_id={created['task_id']}", "task.failed")
        health = (await http.get("/health")).json()
    assert record["error"]["code"] == "internal_error"
    failed = [e for e in events if e["type"] == "task.failed"]
    assert failed and failed[-1]["data"]["reason"] == "internal_error"
    assert health["dead_letters"]["since_start"] >= 1


async def test_delete_removes_a_finished_task_and_everything_it_holds(system: System) -> None:
    """DELETE is 409 while a task runs; once it ended, the record, the agent's head, summary
    and thread, its events and its workspace are gone, and the task is 404."""
    async with httpx.AsyncClient(base_url=system.url, timeout=60) as http:
        created = await create(http, {**SEED, "context": steps(15, delay_ms=50)})
        task_id, agent_id = created["task_id"], created["agent_id"]
        running = await http.delete(f"/tasks/{task_id}")
        assert running.status_code == 409 and running.json()["error"]["code"] == "conflict"
        await task_status(http, task_id, "completed")
        workspace = system.data_dir / "workspaces" / task_id
        assert (workspace / "log.txt").exists()
        deleted = await http.delete(f"/tasks/{task_id}")
        assert deleted.status_code in (200, 202), deleted.text

        async def gone() -> bool:
            return (await http.get(f"/tasks/{task_id}")).status_code == 404

        await eventually(gone, timeout=30, what="the task deleted")
        assert (await http.get(f"/agents/{agent_id}/state")).status_code == 404
        assert (await http.delete(f"/tasks/{task_id}")).status_code == 404

    async def workspace_gone() -> bool:
        return not workspace.exists()

    await eventually(workspace_gone, timeout=30, what="the workspace deleted")
    nc = await nats.connect(system.nats_url, **system.admin)
    js = nc.jetstream()
    threads = await js.stream_info(s.THREADS_STREAM, subjects_filter=s.thread_filter(agent_id))
    events = await js.stream_info(s.EVENTS_STREAM, subjects_filter=s.events_of_task(task_id))
    summary = s.kv_key(s.SUMMARIES_BUCKET, agent_id)
    summaries = await js.stream_info(s.kv_stream(s.SUMMARIES_BUCKET), subjects_filter=summary)
    await nc.close()
    assert not threads.state.subjects
    assert not summaries.state.subjects  # nor is it listed by GET /agents
    # Only the deletion's own event is left, so a client sees what happened.
    assert list((events.state.subjects or {}).values()) in ([1], [])
