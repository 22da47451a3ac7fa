"""Rolling upgrades across the agents' record format (DESIGN §4a, `store/agents.py`).

A system runs three tasks (one finished, one waiting for a human, one mid-run) and is
stopped; its store is then rewritten as the previous version left it: every agent a whole
state with its thread inline (format 1, no tallies), no thread items, no summaries bucket.
This version, started on it, serves each agent as it was (listings, status, state, thread),
fills the summaries in from the heads (the orchestrator), and both unfinished runs go on to
completion, each step once; only the agents written since are format 2. And this version,
meeting a head of a format newer than its own, refuses it: its edge never shows a misread
state, its agent process never writes over it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.js.errors import NotFoundError

from agentops import credentials, embedded
from agentops.natsserver import NatsServer
from agentops.protocol import subjects as s
from agentops.store.agents import AgentStore
from tests.e2e.conftest import System, start_system
from tests.e2e.test_system import SEED, create, steps, task_status
from tests.helpers import eventually
from tests.unit.test_state_encoding import TALLIES

pytestmark = pytest.mark.e2e

ASK = {"tool": "request_human_input", "args": {"question": "Go on?", "format": "yes_no"}}
LINES = 12
ROUTES = ("status", "state", "thread?limit=1000")


@dataclass
class Upgraded:
    system: System  # this version, on the store the previous version left
    done: dict[str, str]  # task_id, agent_id of the finished task
    asking: dict[str, str]  # ... of the one awaiting a human
    running: dict[str, str]  # ... of the one stopped mid-run
    before: dict[str, dict[str, Any]]  # "<agent_id> <route>" -> the answer before the upgrade
    rows: dict[str, dict[str, Any]]  # agent_id -> its GET /agents row before the upgrade
    heads: dict[str, dict[str, Any]]  # agent_id -> its stored document right after the upgrade


async def admin(system: System) -> nats.NATS:
    return await nats.connect(system.nats_url, **system.admin)


async def stored_head(system: System, agent_id: str) -> dict[str, Any]:
    nc = await admin(system)
    try:
        entry = await (await nc.jetstream().key_value(s.AGENTS_BUCKET)).get(agent_id)
        return dict(json.loads(entry.value or b"{}"))
    finally:
        await nc.close()


async def answers(http: httpx.AsyncClient, agent_ids: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for agent_id in agent_ids:
        for route in ROUTES:
            resp = await http.get(f"/agents/{agent_id}/{route}")
            assert resp.status_code == 200, resp.text
            out[f"{agent_id} {route}"] = resp.json()
    return out


async def listed(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    rows = (await http.get("/agents", params={"limit": 1000})).json()["agents"]
    return {row["agent_id"]: row for row in rows}


async def run_before(system: System) -> tuple[dict[str, str], ...]:
    """Three tasks on the system about to be stopped: finished, awaiting a human, mid-run."""
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        done = await create(http, {**SEED, "context": steps(2)})
        asking = await create(
            http, {**SEED, "context": {"mock": {"script": [ASK, *steps(1)["mock"]["script"]]}}}
        )
        running = await create(http, {**SEED, "context": steps(LINES, delay_ms=300)})
        await task_status(http, done["task_id"], "completed")
        await task_status(http, asking["task_id"], "awaiting_human")

        async def mid_run() -> bool:
            status = (await http.get(f"/agents/{running['agent_id']}/status")).json()
            return bool(status["status"] == "running" and status["current_step"] >= 3)

        await eventually(mid_run, timeout=60, what="the third task mid-run")
    return done, asking, running


async def to_previous_version(data: Path, port: int, log: Path) -> None:
    """Rewrite the stopped system's store as the previous version left it: each agent its
    whole state with the thread inline (format 1, without the tallies it did not keep), no
    thread items stream, no summaries bucket."""
    server = NatsServer(
        store_dir=embedded.store_dir(data, None), port=port, monitor_port=None,
        config=data / embedded.CONFIG, log_file=log,
    ).start()  # fmt: skip
    try:
        seed = credentials.seed_path(data, credentials.ADMIN)
        nc = await nats.connect(server.url, nkeys_seed=str(seed))
        js = nc.jetstream(timeout=10)
        kv = await js.key_value(s.AGENTS_BUCKET)
        store = AgentStore(nc, js, kv)
        for agent_id in await kv.keys():
            loaded = await store.load(agent_id)
            assert loaded is not None
            await kv.put(agent_id, loaded.state.model_dump_json(exclude=set(TALLIES)).encode())
        await js.delete_stream(s.THREADS_STREAM)
        await js.delete_key_value(s.SUMMARIES_BUCKET)
        await nc.close()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upgraded]:
    root = tmp_path_factory.mktemp("upgrade")
    data = root / "data"
    first = start_system(data)
    try:
        done, asking, running = asyncio.run(run_before(first))
        ids = [done["agent_id"], asking["agent_id"]]

        async def read() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
            async with httpx.AsyncClient(base_url=first.url, timeout=30) as http:
                return await answers(http, ids), await listed(http)

        before, rows = asyncio.run(read())
    finally:
        first.stop()  # SIGTERM: the mid-run task's next messages stay queued
    asyncio.run(to_previous_version(data, first.nats_port, root / "nats-between.log"))
    system = start_system(data)
    try:
        agent_ids = [done["agent_id"], asking["agent_id"], running["agent_id"]]
        heads = {a: asyncio.run(stored_head(system, a)) for a in agent_ids[:2]}
        yield Upgraded(system, done, asking, running, before, rows, heads)
    finally:
        system.stop()


async def summaries_of(system: System, agent_ids: list[str]) -> dict[str, str] | None:
    """Each agent's stored summary status, or None while one is missing."""
    nc = await admin(system)
    try:
        kv = await nc.jetstream().key_value(s.SUMMARIES_BUCKET)
        out = {}
        for agent_id in agent_ids:
            try:
                entry = await kv.get(agent_id)
            except (NotFoundError, nats.js.errors.KeyNotFoundError):
                return None
            out[agent_id] = json.loads(entry.value or b"{}")["status"]
        return out
    finally:
        await nc.close()


async def test_a_store_of_the_previous_version_is_served_and_its_runs_go_on(
    upgraded: Upgraded,
) -> None:
    """Format-1 agents (finished, awaiting a human) are served as before the upgrade, their
    summaries are filled in, and both unfinished runs complete, each step once; an agent
    written since is format 2, a finished one stays format 1 and is still served."""
    system = upgraded.system
    done, asking = upgraded.done["agent_id"], upgraded.asking["agent_id"]
    running = upgraded.running["agent_id"]
    for agent_id, head in upgraded.heads.items():  # untouched until their agent moves
        assert "format" not in head and isinstance(head["thread"], list), agent_id
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        assert await answers(http, [done, asking]) == upgraded.before
        rows = await listed(http)
        for agent_id in (done, asking):
            assert rows[agent_id] == upgraded.rows[agent_id]
        summaries = await eventually(
            lambda: summaries_of(system, [done, asking, running]), timeout=30,
            what="summaries filled in from the heads",
        )  # fmt: skip
        assert (summaries[done], summaries[asking]) == ("completed", "awaiting_human")
        status = upgraded.before[f"{asking} status"]
        resp = await http.post(
            f"/agents/{asking}/human-response",
            json={"response": "yes", "request_id": status["human_request"]["request_id"]},
        )
        assert resp.status_code == 200, resp.text
        for task in (upgraded.asking, upgraded.running):
            await task_status(http, task["task_id"], "completed")
        state = (await http.get(f"/agents/{asking}/state")).json()
        old_thread = upgraded.before[f"{asking} state"]["thread"]
        assert state["thread"][: len(old_thread)] == old_thread
        assert len(state["thread"]) > len(old_thread)
        rows = await listed(http)
        assert rows[asking]["status"] == rows[running]["status"] == "completed"
        assert await answers(http, [done]) == {
            k: v for k, v in upgraded.before.items() if k.startswith(done)
        }
    workspace = system.data_dir / "workspaces" / upgraded.running["task_id"]
    lines = (workspace / "log.txt").read_text().splitlines()
    assert lines == [f"line {i}" for i in range(LINES)]
    for agent_id in (asking, running):
        head = await stored_head(system, agent_id)
        assert head["format"] == 2 and head["thread"] is None, agent_id
    head = await stored_head(system, done)
    assert "format" not in head and isinstance(head["thread"], list)


async def test_a_head_of_a_newer_format_is_refused_never_misread(upgraded: Upgraded) -> None:
    """An agent whose head a newer version wrote (format 3): this version's edge answers 503
    `unreadable_record` naming the format rather than a misread state (listings show its summary), and its agent process,
    sent a cancel, refuses the head: dead-lettered as corrupt_document, never written over."""
    system = upgraded.system
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        created = await create(http, {**SEED, "context": {"mock": {"script": [ASK]}}})
        agent_id = created["agent_id"]
        await task_status(http, created["task_id"], "awaiting_human")
        nc = await admin(system)
        try:
            js = nc.jetstream(timeout=10)
            kv = await js.key_value(s.AGENTS_BUCKET)
            entry = await kv.get(agent_id)
            newer = {**json.loads(entry.value or b"{}"), "format": 3, "x_added_later": [1]}
            data = json.dumps(newer).encode()
            await kv.put(agent_id, data)
            dlq_start = (await js.stream_info(s.DLQ_STREAM)).state.last_seq
            status = await http.get(f"/agents/{agent_id}/status")
            error = status.json()["error"]
            assert status.status_code == 503 and error["code"] == "unreadable_record"
            assert "format 3" in error["message"] and "upgrade" in error["message"]
            rows = await listed(http)
            assert rows[agent_id]["status"] == "awaiting_human"  # its summary
            cancelled = await http.post(f"/tasks/{created['task_id']}/cancel")
            assert cancelled.status_code == 200, cancelled.text

            async def dead_letter() -> dict[str, str] | None:
                info = await js.stream_info(s.DLQ_STREAM)
                for seq in range(dlq_start + 1, info.state.last_seq + 1):
                    msg = await js.get_msg(s.DLQ_STREAM, seq)
                    if agent_id in msg.subject:
                        return dict(msg.headers or {})
                return None

            headers = await eventually(dead_letter, timeout=60, what="the cancel dead-lettered")
            assert "corrupt_document" in headers.values(), headers
            assert any("format 3" in v for v in headers.values()), headers
            assert (await kv.get(agent_id)).value == data
        finally:
            await nc.close()
