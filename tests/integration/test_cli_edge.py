"""The `agentops` CLI as a subprocess against a real edge (its own nats-server): `-o json`,
pipes closed early, `respond --yes`, `--token`, and `logs`/`watch` over the WebSocket."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentops.bus.connection import publish_event
from agentops.protocol import subjects as s
from agentops.protocol.messages import Event, HumanResponse
from tests.helpers import until
from tests.integration import test_edge_api as api
from tests.integration.test_edge_api import Edge, agent_state, nothing, play, task_record

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
make_edge = api.make_edge  # the edge fixtures of test_edge_api, reused
edge = api.edge


def cli_env(edge: Edge) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTOPS_")}
    env.update(PYTHONPATH=str(REPO), AGENTOPS_URL=str(edge.client.make_url("")).rstrip("/"))
    return env


async def cli(
    edge: Edge, *argv: str, reader: str = "all", timeout: float = 60
) -> tuple[int, str, str]:
    """Run `agentops ARGV` against `edge`; `reader` is how its stdout is read: `all`, `none`
    (the pipe's reader is gone before it writes) or `line` (one line, then closed: `| head -1`)."""
    env = cli_env(edge)
    read_fd, write_fd = os.pipe()
    if reader == "none":
        os.close(read_fd)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentops.cli", *argv,
        stdout=write_fd, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    os.close(write_fd)
    out = b""
    if reader != "none":
        with os.fdopen(read_fd, "rb") as stream:
            out = await asyncio.to_thread(stream.readline if reader == "line" else stream.read)
    assert proc.stderr is not None
    err = await asyncio.wait_for(proc.stderr.read(), timeout)
    code = await asyncio.wait_for(proc.wait(), timeout)
    return code, out.decode(), err.decode()


async def put_tasks(edge: Edge, n: int) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for i in range(n):
        await edge.put_task(task_record(f"task_{i:04d}", created_at=start + timedelta(seconds=i)))


async def test_tasks_json_is_the_edges_answer(edge: Edge) -> None:
    """`tasks -o json` prints exactly what GET /tasks answers; the table has one row each."""
    await put_tasks(edge, 3)
    code, out, err = await cli(edge, "tasks", "-o", "json")
    assert (code, err) == (0, "")
    assert json.loads(out) == await (await edge.client.get("/tasks")).json()
    code, out, _ = await cli(edge, "tasks")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == [
        "TASK", "task_0002", "task_0001", "task_0000", "1-3",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "reader"),
    [(("tasks",), "none"), (("tasks", "-o", "json", "--limit", "400"), "line")],
    ids=["reader-gone-before-output", "head-1-of-a-long-listing"],
)
async def test_a_pipe_closed_early_ends_quietly(
    edge: Edge, argv: tuple[str, ...], reader: str
) -> None:
    """`agentops tasks | head -1`: exit 0, nothing on stderr, no traceback."""
    await put_tasks(edge, 400)  # ~200 KB of JSON: more than a pipe holds, so a write meets EPIPE
    code, out, err = await cli(edge, *argv, reader=reader)
    assert (code, err) == (0, "")
    if reader == "line":
        assert out == "{\n"


async def test_respond_yes_answers_the_open_yes_no_question(edge: Edge) -> None:
    """`respond AGENT --yes` publishes "yes" for the open request to the agent's mailbox."""
    thread = api.human_thread()
    question = thread[-1].model_copy(update={"format": "yes_no"})
    await edge.put_agent(agent_state(status="awaiting_human", thread=(thread[0], question)))
    seen, sub = await play(
        edge.nc, s.agent_mailbox_filter("backend_developer", "agent_a1"), nothing
    )
    code, out, err = await cli(edge, "respond", "agent_a1", "--yes")
    assert (code, err) == (0, "")
    assert out == "response_queued: agent agent_a1 is awaiting_human\n"  # nobody plays the agent
    await until(lambda: seen, what="the answer on the mailbox")
    [(_, msg)] = seen
    assert isinstance(msg, HumanResponse) and msg.response == "yes"
    code, _, err = await cli(edge, "respond", "agent_a1", "--choice", "maybe")
    assert code == 1
    assert 'answer "yes" or "no"' in err
    await sub.unsubscribe()


async def test_token_flag_opens_an_edge_that_requires_one(make_edge: api.MakeEdge) -> None:
    """Without the token the edge says 401 (exit 1); with --token the command works."""
    edge = await make_edge(api_token="s3cret")
    code, _, err = await cli(edge, "agents")
    assert code == 1 and err.startswith("error: HTTP 401 unauthorized")
    code, out, err = await cli(edge, "agents", "--token", "s3cret", "-o", "json")
    assert (code, err, json.loads(out)) == (0, "", {"agents": [], "total": 0})


# ---- logs and watch over WS /ws ----


async def emit(edge: Edge, n: int, kind: str, ts: datetime, **data: Any) -> None:
    event = Event(
        id=f"task_t1.ev{n}", type=kind, ts=ts, task_id="task_t1", agent_id="agent_a1", data=data
    )  # type: ignore[arg-type]
    await publish_event(edge.js, event)


async def run_history(edge: Edge, end: str, at: datetime) -> None:
    await emit(edge, 0, "task.created", at, agent_type="backend_developer", description="Build")
    await emit(edge, 1, "agent.step", at, step=1, max_steps=20)
    usage = {"input_tokens": 100, "output_tokens": 20, "cost_usd": 0.5}
    await emit(edge, 2, "llm.response", at, usage=usage, tool_calls=[{"name": "write_file"}])
    await emit(edge, 3, "tool.call", at, call_id="c1", name="write_file", arguments={"path": "a"})
    await emit(edge, 4, "tool.result", at, call_id="c1", name="write_file", ok=True, result={})
    await emit(edge, 5, end, at, steps=1, usage=usage, result={"summary": "all done"})


async def test_logs_prints_a_finished_tasks_events_and_exits(edge: Edge) -> None:
    """One line per event, in order; it stops after the end instead of waiting."""
    finished = datetime.now(UTC) - timedelta(minutes=5)
    record = task_record(status="completed").model_copy(update={"finished_at": finished})
    await edge.put_task(record)
    await run_history(edge, "task.completed", finished)
    code, out, err = await cli(edge, "logs", "task_t1")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert [line.split()[2] for line in lines] == [
        "task.created", "agent.step", "llm.response", "tool.call", "tool.result", "task.completed",
    ]  # fmt: skip
    assert lines[3].endswith('write_file {"path": "a"}')
    code, out, _ = await cli(edge, "logs", "task_t1", "-o", "json", reader="none")
    assert code == 0


@pytest.mark.parametrize(
    ("end", "status", "exit_code"),
    [("task.completed", "completed", 0), ("task.failed", "failed", 1)],
)
async def test_watch_follows_a_running_task_until_its_outcome(
    edge: Edge, end: str, status: str, exit_code: int
) -> None:
    """watch waits while the task runs and exits by its outcome once it ends."""
    await edge.put_task(task_record(status="running"))
    await emit(edge, 0, "task.created", datetime.now(UTC), agent_type="backend_developer")
    watch = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentops.cli", "watch", "task_t1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=cli_env(edge),
    )  # fmt: skip
    assert watch.stdout is not None and watch.stderr is not None
    try:
        # Its first line: the history is replayed and the task still runs.
        first = await asyncio.wait_for(watch.stdout.readline(), 60)
        assert first.decode().startswith("task_t1  running · step 1")
        assert watch.returncode is None
        now = datetime.now(UTC)
        await edge.put_task(task_record(status=status).model_copy(update={"finished_at": now}))
        await run_history(edge, end, now)
        out, err = await asyncio.wait_for(watch.communicate(), 60)
    finally:
        if watch.returncode is None:
            watch.kill()
            await watch.wait()
    assert (watch.returncode, err) == (exit_code, b"")
    last = out.decode().splitlines()[-1]
    assert last.startswith(f"task_t1  {status} · step 1/20") and "120 tokens" in last
