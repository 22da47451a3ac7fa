"""End to end: `agentops up` with every process, driven over HTTP, WebSocket and NATS."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import aiohttp
import httpx
import nats
import pytest

from agentops.agents.loader import shipped_specs
from agentops.protocol import subjects as s
from tests.e2e.conftest import System
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

SEED = {
    "agent_type": "backend_developer",
    "description": "Build a REST API for user authentication with JWT tokens",
    "context": {},
}


def steps(n: int, path: str = "log.txt", delay_ms: int = 0) -> dict[str, Any]:
    """A mock script of n appends: each runs exactly once iff the file has each line once."""
    return {
        "mock": {
            "delay_ms": delay_ms,
            "script": [
                {
                    "tool": "write_file",
                    "args": {"path": path, "content": f"line {i}\n", "mode": "append"},
                }
                for i in range(n)
            ],
        }
    }


async def create(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    resp = await http.post("/tasks", json=body)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


async def task_status(http: httpx.AsyncClient, task_id: str, *wanted: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        record = (await http.get(f"/tasks/{task_id}")).json()
        return record if record.get("status") in wanted else None

    return await eventually(probe, timeout=60, what=f"task {task_id} {wanted}")


async def agent_state(http: httpx.AsyncClient, agent_id: str, predicate: Any) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        resp = await http.get(f"/agents/{agent_id}/state")
        state = resp.json() if resp.status_code == 200 else {}
        return state if state and predicate(state) else None

    return await eventually(probe, timeout=60, what=f"agent {agent_id} state")


async def ws_events(
    system: System | str, query: str, until: str, limit: int = 500
) -> list[dict[str, Any]]:
    """The frames of WS /ws?`query` on the system's edge (or the edge at a URL), up to the
    first of type `until`."""
    url = system if isinstance(system, str) else system.url
    events: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{url}/ws?{query}") as ws,
    ):
        while len(events) < limit:
            msg = await ws.receive(timeout=60)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            event = json.loads(msg.data)
            events.append(event)
            if event["type"] == until:
                break
    return events


async def test_seed_example_runs_to_completion(system: System) -> None:
    """The README's curl example: a realistic multi-step run, visible on every endpoint and WS."""
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        created = await create(http, SEED)
        assert set(created) >= {"task_id", "agent_id", "status", "message"}
        record = await task_status(http, created["task_id"], "completed")
        assert record["result"]["summary"] and record["result"]["artifacts"]
        agent_id = created["agent_id"]
        agents = (await http.get("/agents")).json()["agents"]
        assert any(a["agent_id"] == agent_id and a["status"] == "completed" for a in agents)
        status = (await http.get(f"/agents/{agent_id}/status")).json()
        assert status["status"] == "completed" and status["tool_calls"] >= 4
        assert status["current_step"] >= 4
        state = (await http.get(f"/agents/{agent_id}/state")).json()
        kinds = [item["kind"] for item in state["thread"]]
        assert kinds[0] == "task" and "tool_result" in kinds
    workspace = system.data_dir / "workspaces" / created["task_id"]
    for artifact in record["result"]["artifacts"]:
        assert (workspace / artifact).is_file(), artifact
    events = await ws_events(system, f"since=0&task_id={created['task_id']}", "task.completed")
    types = [e["type"] for e in events]
    for expected in (
        "task.created",
        "agent.status",
        "agent.step",
        "llm.response",
        "tool.call",
        "tool.result",
        "task.completed",
    ):
        assert expected in types, expected
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(
        e["task_id"] == created["task_id"] and e["ts"].endswith(("Z", "+00:00")) for e in events
    )
    executed = [
        e for e in events if e["type"] == "tool.result" and e["data"]["name"] == "execute_code"
    ]
    assert executed and executed[0]["data"]["result"]["exit_code"] == 0


async def test_ws_since_replays_then_goes_live_without_gap(system: System) -> None:
    """since=N replays every later event, then live ones, with no gap and no duplicate."""
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        first = await create(http, {**SEED, "context": steps(2)})
        await task_status(http, first["task_id"], "completed")
        replay = await ws_events(system, f"since=0&task_id={first['task_id']}", "task.completed")
        middle = replay[len(replay) // 2]["seq"]
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{system.url}/ws?since={middle}") as ws,
        ):
            second = await create(http, {**SEED, "context": steps(3)})
            got: list[dict[str, Any]] = []
            while not any(
                e["type"] == "task.completed" and e["task_id"] == second["task_id"] for e in got
            ):
                got.append(json.loads((await ws.receive(timeout=60)).data))
    seqs = [e["seq"] for e in got]
    assert seqs[0] == middle + 1
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gap or duplicate in the stream"


async def test_human_in_the_loop_answer_reaches_the_model(system: System) -> None:
    """request_human_input waits; the answer comes back as that call's result in the next request."""
    ask = {
        "tool": "request_human_input",
        "args": {
            "question": "Which database?",
            "format": "multiple_choice",
            "choices": ["postgres", "sqlite"],
        },
    }
    nc = await nats.connect(system.nats_url, **system.admin)
    requests: list[dict[str, Any]] = []

    async def capture(msg: Any) -> None:
        requests.append(json.loads(msg.data))

    await nc.subscribe(s.llm_requests(), cb=capture)
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        created = await create(http, {**SEED, "context": {"mock": {"script": [ask]}}})
        agent_id = created["agent_id"]
        await task_status(http, created["task_id"], "awaiting_human")
        status = (await http.get(f"/agents/{agent_id}/status")).json()
        assert status["awaiting_human"] is True and status["pending_requests"] == 1
        question = status["human_request"]
        assert question["question"] == "Which database?"
        events = await ws_events(system, f"since=0&agent_id={agent_id}", "human.request")
        assert events[-1]["data"]["choices"] == ["postgres", "sqlite"]
        resp = await http.post(
            f"/agents/{agent_id}/human-response",
            json={"response": "postgres", "request_id": question["request_id"]},
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "response_received"
        again = await http.post(f"/agents/{agent_id}/human-response", json={"response": "x"})
        assert again.status_code in (200, 409)
        await task_status(http, created["task_id"], "completed")
    await nc.drain()
    mine = [r for r in requests if r["agent_id"] == agent_id]
    last_tool = [m for m in mine[-1]["request"]["messages"] if m["role"] == "tool"][-1]
    assert last_tool["tool_call_id"] == question["call_id"] and "postgres" in last_tool["content"]


async def test_pause_holds_and_resume_continues(system: System) -> None:
    """While paused, no tool call goes out even when the LLM answer arrives; resume finishes."""
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        created = await create(http, {**SEED, "context": steps(4, delay_ms=400)})
        agent_id = created["agent_id"]
        await agent_state(
            http,
            agent_id,
            lambda st: st["status"] == "running" and (st["inflight"] or {}).get("kind") == "llm",
        )
        resp = await http.post(f"/agents/{agent_id}/pause")
        assert resp.status_code == 200 and resp.json() == {"status": "paused", "agent_id": agent_id}
        held = await agent_state(
            http, agent_id, lambda st: (st["inflight"] or {}).get("kind") == "dispatch"
        )
        tool_calls_while_paused = sum(1 for i in held["thread"] if i["kind"] == "tool_result")
        assert (await http.post(f"/agents/{agent_id}/pause")).status_code == 409
        assert (
            await http.post(f"/agents/{agent_id}/human-response", json={"response": 1})
        ).status_code == 409
        still = (await http.get(f"/agents/{agent_id}/state")).json()
        assert (
            sum(1 for i in still["thread"] if i["kind"] == "tool_result") == tool_calls_while_paused
        )
        resp = await http.post(f"/agents/{agent_id}/resume")
        assert resp.status_code == 200 and resp.json()["status"] == "resumed"
        assert (await http.post(f"/agents/{agent_id}/resume")).status_code == 409
        await task_status(http, created["task_id"], "completed")
    log = system.data_dir / "workspaces" / created["task_id"] / "log.txt"
    assert log.read_text().splitlines() == [f"line {i}" for i in range(4)]


async def test_cancel_stops_a_running_task(system: System) -> None:
    """Cancel ends a running task; a second cancel is a 409."""
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        created = await create(http, {**SEED, "context": steps(50, delay_ms=200)})
        await task_status(http, created["task_id"], "running")
        resp = await http.post(f"/tasks/{created['task_id']}/cancel")
        assert resp.status_code == 200
        await task_status(http, created["task_id"], "cancelled")
        assert (await http.post(f"/tasks/{created['task_id']}/cancel")).status_code == 409


async def test_max_steps_without_complete_task_fails(system: System) -> None:
    """A scripted run longer than max_steps ends failed."""
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        created = await create(http, {**SEED, "context": steps(10), "max_steps": 3})
        record = await task_status(http, created["task_id"], "failed", "completed")
        assert record["status"] == "failed" and record["error"]["code"] == "max_steps"


async def test_three_llm_errors_escalate_to_a_human_who_can_unblock_it(system: System) -> None:
    """Scripted LLM errors escalate after three in a row; the human's answer resumes the run."""
    errors = [{"error": "timeout"}, {"error": "rate_limit"}, {"error": "server"}]
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        created = await create(http, {**SEED, "context": {"mock": {"script": errors}}})
        await task_status(http, created["task_id"], "awaiting_human")
        status = (await http.get(f"/agents/{created['agent_id']}/status")).json()
        assert status["human_request"]["reason"] == "escalation" and status["errors"] == 3
        resp = await http.post(
            f"/agents/{created['agent_id']}/human-response", json={"response": "carry on"}
        )
        assert resp.status_code == 200, resp.text
        await task_status(http, created["task_id"], "completed")


async def test_garbage_on_every_subject_is_dead_lettered(system: System) -> None:
    """Junk published on AgentOps subjects goes to the DLQ; no process crashes or restarts."""
    before = system.pids()
    nc = await nats.connect(system.nats_url, **system.admin)
    js = nc.jetstream()
    junk_subjects = [
        s.task_inbox("task_junk", "task.submit"),
        s.agent_mailbox("backend_developer", "agent_junk", "agent.start"),
        s.llm_requests(),
        s.tool_requests("write_file"),
    ]
    for subject in junk_subjects:
        await js.publish(subject, b"\xff\xfe not json")
        await js.publish(subject, b'{"type": "agent.start", "id": 1}')
    await js.publish(s.event("task_junk", None, "task.created"), b"not an event")

    async def dead_letters() -> int:
        info = await js.stream_info(s.DLQ_STREAM)
        return info.state.messages if info.state.messages >= 8 else 0

    await eventually(dead_letters, timeout=30, what="8 dead letters")
    await nc.drain()
    assert system.pids() == before
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        assert (await http.get("/health")).status_code == 200
        created = await create(http, {**SEED, "context": steps(1)})
        await task_status(http, created["task_id"], "completed")


async def test_health_lists_every_process(system: System) -> None:
    """GET /health reports each AgentOps process as up, found through $SRV.PING."""
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        health = (await http.get("/health")).json()
    assert health["status"] == "healthy"
    assert set(health["services"]) == set(s.all_processes(shipped_specs()))
    assert all(v["status"] == "up" for v in health["services"].values())


@pytest.mark.parametrize(
    "victim",
    [
        "agent-backend_developer",
        "tool-executor",
        "llm-gateway",
        "orchestrator",
        "edge",
        "nats-server",
    ],
)
async def test_kill_9_mid_task_loses_nothing_and_runs_nothing_twice(
    system: System, victim: str
) -> None:
    """SIGKILL a process mid-task: it is restarted, the task completes, each step runs once."""
    n = 8
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        created = await create(http, {**SEED, "context": steps(n, delay_ms=150)})
        await agent_state(http, created["agent_id"], lambda st: st["step"] >= 3)
        old = system.pids()[victim]
        os.kill(old, signal.SIGKILL)

        async def restarted() -> bool:
            pid = system.pids().get(victim)
            return pid is not None and pid != old

        await eventually(restarted, timeout=30, what=f"{victim} restarted")

        async def finished() -> dict[str, Any] | None:
            try:
                record = (await http.get(f"/tasks/{created['task_id']}")).json()
            except httpx.HTTPError:  # the edge may be the one restarting
                return None
            return record if record.get("status") == "completed" else None

        await eventually(finished, timeout=90, what="task completed after the kill")
    log = system.data_dir / "workspaces" / created["task_id"] / "log.txt"
    events = await ws_events(system, f"since=0&task_id={created['task_id']}", "task.completed")
    # A kill inside an append can leave that one call `interrupted` (not run again, by design);
    # every other line is there exactly once, in order.
    interrupted = {
        e["data"]["step"] - 1
        for e in events
        if e["type"] == "tool.result" and (e["data"]["error"] or {}).get("code") == "interrupted"
    }
    lines = log.read_text().splitlines()
    assert len(lines) == len(set(lines)), "a tool call ran twice"
    assert [x for x in lines if int(x.split()[1]) not in interrupted] == [
        f"line {i}" for i in range(n) if i not in interrupted
    ]
    step_numbers = [e["data"]["step"] for e in events if e["type"] == "agent.step"]
    assert step_numbers == list(range(1, n + 2))
    calls = [e["data"]["call_id"] for e in events if e["type"] == "tool.call"]
    assert len(calls) == len(set(calls)) == n + 1


def test_restart_keeps_a_task_waiting_for_a_human(tmp_path: Any) -> None:
    """Stop everything while a task awaits a human; after `agentops up` again it can be answered."""
    from tests.e2e.conftest import start_system

    data = tmp_path / "data"
    first = start_system(data)
    ask = {"tool": "request_human_input", "args": {"question": "Deploy now?", "format": "yes_no"}}
    try:
        with httpx.Client(base_url=first.url, timeout=30) as http:
            created = http.post(
                "/tasks", json={**SEED, "context": {"mock": {"script": [ask]}}}
            ).json()
            asyncio.run(_wait_sync_status(first.url, created["task_id"], "awaiting_human"))
    finally:
        first.stop()
    second = start_system(data)
    try:
        with httpx.Client(base_url=second.url, timeout=30) as http:
            assert http.get(f"/tasks/{created['task_id']}").json()["status"] == "awaiting_human"
            resp = http.post(
                f"/agents/{created['agent_id']}/human-response", json={"response": "yes"}
            )
            assert resp.status_code == 200, resp.text
        asyncio.run(_wait_sync_status(second.url, created["task_id"], "completed"))
    finally:
        second.stop()


async def _wait_sync_status(url: str, task_id: str, wanted: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        await task_status(http, task_id, wanted)


def test_up_with_an_external_nats_server_names_every_connection(tmp_path: Any) -> None:
    """`agentops up --nats-url` uses that server; every process connects as agentops-<process>."""
    from agentops.natsserver import NatsServer
    from tests.e2e.conftest import start_system

    with NatsServer(store_dir=tmp_path / "js", log_file=tmp_path / "nats.log") as server:
        system = start_system(tmp_path / "data", nats_url=server.url)
        try:
            assert "nats-server" not in system.pids()
            with httpx.Client(base_url=system.url, timeout=30) as http:
                created = http.post("/tasks", json={**SEED, "context": steps(1)}).json()
            asyncio.run(_wait_sync_status(system.url, created["task_id"], "completed"))
            connz = httpx.get(f"{server.monitor_url}/connz?limit=100", timeout=5).json()
            names = {c.get("name") for c in connz["connections"]}
            assert {s.connection_name(p) for p in s.all_processes(shipped_specs())} <= names
        finally:
            system.stop()


def test_banner_states_the_code_isolation_in_force(system: System) -> None:
    """The banner `agentops up` prints says how code runs, as `/health` reports it."""
    health = httpx.get(f"{system.url}/health", timeout=10).json()
    mode = health["services"]["tool-executor"]["isolation"]["mode"]
    expected = {"bwrap": "sandbox    bubblewrap; network off", "refused": "sandbox    REFUSED"}
    assert expected[mode] in system.output.read_text()


def sandboxed_processes(marker: str) -> list[int]:
    """PIDs of processes whose command line holds `marker` (our sandboxed program's)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                found.append(int(entry))
    return found


async def test_kill_9_of_the_executor_mid_code_leaves_nothing_running(system: System) -> None:
    """SIGKILL of the executor mid-code kills the sandbox; the call is `interrupted`, not rerun."""
    # The task then goes on to completion.
    marker = "sleep 77.5"
    code = {"language": "bash", "code": f"{marker} & {marker}; echo done", "timeout": 60}
    script = [{"tool": "execute_code", "args": code}]

    async def running() -> bool:
        return bool(sandboxed_processes(marker))

    async def gone() -> bool:
        return not sandboxed_processes(marker)

    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        health = (await http.get("/health")).json()
        if health["services"]["tool-executor"]["isolation"]["mode"] != "bwrap":
            pytest.skip("bubblewrap is not available: code execution is refused here")
        created = await create(http, {**SEED, "context": {"mock": {"script": script}}})
        await eventually(running, timeout=30, what="code running")
        old = system.pids()["tool-executor"]
        os.kill(old, signal.SIGKILL)
        await eventually(gone, timeout=15, what="sandboxed processes gone with the executor")

        async def finished() -> dict[str, Any] | None:
            record = (await http.get(f"/tasks/{created['task_id']}")).json()
            return record if record.get("status") == "completed" else None

        await eventually(finished, timeout=90, what="task completed after the kill")
    assert system.pids()["tool-executor"] != old
    events = await ws_events(system, f"since=0&task_id={created['task_id']}", "task.completed")
    [result] = [e["data"] for e in events if e["type"] == "tool.result"]
    assert result["ok"] is False and result["error"]["code"] == "interrupted"


async def test_new_agents_are_readable_at_once_while_their_process_restarts(
    system: System,
) -> None:
    """kill -9 of the agent process, then 20 POST /tasks: each agent id answers 200 at once on
    status, state and thread (`idle` until started), and every task then completes."""
    victim = "agent-backend_developer"
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        old = system.pids()[victim]
        os.kill(old, signal.SIGKILL)
        created = []
        for i in range(20):
            task = await create(http, {**SEED, "description": f"readable at once {i}"})
            for route in ("status", "state", "thread"):
                resp = await http.get(f"/agents/{task['agent_id']}/{route}")
                assert resp.status_code == 200, (i, route, resp.text)
            created.append(task)

        async def restarted() -> bool:
            pid = system.pids().get(victim)
            return pid is not None and pid != old

        await eventually(restarted, timeout=30, what=f"{victim} restarted")
        for task in created:
            await task_status(http, task["task_id"], "completed")


async def test_a_deleted_events_stream_is_declared_again_and_tasks_go_on(system: System) -> None:
    """Deleting AGENTOPS_EVENTS while running: the orchestrator declares it again, a task
    submitted meanwhile completes (never `queued` for ever) and /health is healthy again."""
    nc = await nats.connect(system.nats_url, **system.admin)
    try:
        await nc.jetstream().delete_stream(s.EVENTS_STREAM)
        async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
            created = await create(http, SEED)
            await task_status(http, created["task_id"], "completed")

            async def healthy() -> dict[str, Any] | None:
                body = (await http.get("/health")).json()
                return body if body["status"] == "healthy" else None

            body = await eventually(healthy, timeout=30, what="healthy again")
            assert body["jetstream"]["streams"][s.EVENTS_STREAM] == "ok"
    finally:
        await nc.close()


async def test_an_agent_summary_is_written_at_status_changes_not_at_every_step(
    system: System,
) -> None:
    """A 12-step run writes its agent's summary at its few status changes, not once per step
    (the edge's index of agents follows those writes); GET /agents shows a running agent's
    live step and the ended agent's last one."""
    nc = await nats.connect(system.nats_url, **system.admin)
    written: list[dict[str, Any]] = []

    async def record(msg: Any) -> None:
        written.append(json.loads(msg.data))

    await nc.subscribe(s.kv_keys(s.SUMMARIES_BUCKET), cb=record)
    await nc.flush()
    try:
        async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
            created = await create(http, {**SEED, "context": steps(12, delay_ms=150)})
            agent_id = created["agent_id"]

            async def listed_running_at_step_3() -> dict[str, Any] | None:
                body = (await http.get("/agents?status=running")).json()
                rows = [a for a in body["agents"] if a["agent_id"] == agent_id]
                return rows[0] if rows and rows[0]["current_step"] >= 3 else None

            await eventually(listed_running_at_step_3, timeout=60, what="a live step listed")
            await task_status(http, created["task_id"], "completed")
            status = (await http.get(f"/agents/{agent_id}/status")).json()

            async def listed_completed() -> dict[str, Any] | None:
                rows = (await http.get("/agents?status=completed&limit=1000")).json()["agents"]
                return next((a for a in rows if a["agent_id"] == agent_id), None)

            row = await eventually(listed_completed, timeout=30, what="listed completed")
    finally:
        await nc.close()
    assert row["current_step"] == status["current_step"] >= 12
    mine = [w for w in written if w["agent_id"] == agent_id]
    assert 1 <= len(mine) <= 4, [w["status"] for w in mine]
    assert mine[-1]["status"] == "completed" and mine[-1]["step"] == status["current_step"]


async def test_a_deleted_summaries_bucket_is_filled_in_again_from_the_heads(
    system: System,
) -> None:
    """Deleting the summaries bucket (or a store from before summaries): the orchestrator
    declares it again and writes a summary from every head, so GET /agents lists the agents
    that ended before, with their status."""
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        created = await create(http, {**SEED, "context": steps(2)})
        await task_status(http, created["task_id"], "completed")
        nc = await nats.connect(system.nats_url, **system.admin)
        try:
            await nc.jetstream().delete_stream(s.kv_stream(s.SUMMARIES_BUCKET))
        finally:
            await nc.close()

        async def listed_again() -> dict[str, Any] | None:
            rows = (await http.get("/agents?status=completed&limit=1000")).json()["agents"]
            return next((a for a in rows if a["agent_id"] == created["agent_id"]), None)

        row = await eventually(listed_again, timeout=30, what="the agent listed again")
    assert row["task_id"] == created["task_id"] and row["current_step"] >= 2
