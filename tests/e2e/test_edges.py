"""Several edges behind a load balancer: a second `agentops run edge` on the same NATS.

The data dir gets a credential per replica first (`agentops init --replicas 2`, as a
deployment prepares them), so the second edge connects as its own user `edge@2`
(AGENTOPS_REPLICA=2). Both edges serve the same tasks and agents at once, an Idempotency-Key
means one task whichever edge gets the retry, and a WebSocket follower of a running task
resumes on the other edge with `since=` after kill -9 of the first: what it saw and what it
gets there is the full replay, with no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from agentops.natsserver import die_with_parent, free_port
from tests.e2e.conftest import System, start_system
from tests.e2e.hybrid_nats import stop_process
from tests.e2e.test_system import SEED, create, steps, task_status, ws_events
from tests.helpers import eventually, eventually_sync, until

pytestmark = pytest.mark.e2e


@dataclass
class Edges:
    system: System  # `agentops up`: edge 1 is its child `edge`
    url2: str  # the second edge, `agentops run edge` as `edge@2`
    log2: Path


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def edges(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edges]:
    root = tmp_path_factory.mktemp("edges")
    data = root / "data"
    init = subprocess.run(
        [sys.executable, "-m", "agentops.cli", "init", "--data-dir", str(data), "--replicas", "2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    log2, port2 = root / "edge@2.log", free_port()
    env = {
        **os.environ,
        "AGENTOPS_DATA_DIR": str(data),  # its credential: credentials/edge@2.nk
        "AGENTOPS_REPLICA": "2",
        "AGENTOPS_HOST": "127.0.0.1",
        "AGENTOPS_PORT": str(port2),
        "AGENTOPS_LOG_LEVEL": "info",
        "AGENTOPS_LOG_FORMAT": "json",
    }
    with ExitStack() as stack:
        system = start_system(data)
        stack.callback(system.stop)  # last: fails on any permissions violation, edge@2's too
        with log2.open("ab") as out:
            proc2 = subprocess.Popen(
                [sys.executable, "-m", "agentops.cli", "run", "edge"],
                env={**env, "NATS_URL": system.nats_url}, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )  # fmt: skip
        stack.callback(stop_process, proc2)
        url2 = f"http://127.0.0.1:{port2}"

        def up() -> bool:
            assert proc2.poll() is None, log2.read_text()
            return healthy(url2)

        eventually_sync(up, timeout=60, interval=0.1, what="the second edge healthy")
        yield Edges(system, url2, log2)


def started_as(log: Path) -> str:
    """The credential the process's `process.started` line names."""
    for line in log.read_text(errors="replace").splitlines():
        if '"process.started"' in line:
            return str(json.loads(line)["auth"])
    raise AssertionError(f"no process.started in {log}")


async def test_the_second_edge_runs_as_its_own_nats_user(edges: Edges) -> None:
    """The second edge connects with its own credential (edge@2) and sees every process."""
    assert started_as(edges.log2).endswith("credentials/edge@2.nk")
    async with httpx.AsyncClient(timeout=30) as http:
        one = (await http.get(f"{edges.system.url}/health")).json()
        two = (await http.get(f"{edges.url2}/health")).json()
    assert one["status"] == two["status"] == "healthy"
    assert set(one["services"]) == set(two["services"])


async def test_an_idempotency_key_gives_one_task_whichever_edge_gets_the_retry(
    edges: Edges,
) -> None:
    """POST /tasks with one Idempotency-Key to edge 1, then to edge 2: the same task, once."""
    key = f"edges-{uuid.uuid4().hex}"
    body = {**SEED, "description": f"idempotent across edges {key}", "context": steps(1)}
    headers = {"Idempotency-Key": key}
    async with httpx.AsyncClient(timeout=30) as http:
        before = (await http.get(f"{edges.url2}/tasks")).json()["total"]
        first = await http.post(f"{edges.system.url}/tasks", json=body, headers=headers)
        again = await http.post(f"{edges.url2}/tasks", json=body, headers=headers)
        assert first.status_code == again.status_code == 201, (first.text, again.text)
        one, two = first.json(), again.json()
        assert (two["task_id"], two["agent_id"]) == (one["task_id"], one["agent_id"])
        assert again.headers.get("Idempotent-Replayed") == "true"
        other = await http.post(
            f"{edges.url2}/tasks", json={**body, "description": "another body"}, headers=headers
        )
        assert (
            other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
        )
        http.base_url = httpx.URL(edges.url2)
        await task_status(http, one["task_id"], "completed")
        after = (await http.get("/tasks")).json()["total"]
    assert after == before + 1


async def test_a_task_created_on_one_edge_is_readable_at_once_on_the_other(
    edges: Edges,
) -> None:
    """A task created on edge 1 answers at once on edge 2: both listings have it, its record,
    its agent's status, state and thread; it then completes, as both edges list it."""
    async with (
        httpx.AsyncClient(base_url=edges.system.url, timeout=30) as one,
        httpx.AsyncClient(base_url=edges.url2, timeout=30) as two,
    ):
        created = await create(one, {**SEED, "context": steps(2)})
        task_id, agent_id = created["task_id"], created["agent_id"]
        agents = (await two.get("/agents", params={"limit": 1000})).json()["agents"]
        assert agent_id in {a["agent_id"] for a in agents}
        tasks = (await two.get("/tasks", params={"limit": 500})).json()["tasks"]
        assert task_id in {t["task_id"] for t in tasks}
        record = await two.get(f"/tasks/{task_id}")
        assert record.status_code == 200 and record.json()["agent_id"] == agent_id
        for route in ("status", "state", "thread"):
            resp = await two.get(f"/agents/{agent_id}/{route}")
            assert resp.status_code == 200, (route, resp.text)
        await task_status(two, task_id, "completed")
        for http in (one, two):
            agents = (await http.get("/agents", params={"limit": 1000})).json()["agents"]
            assert {a["agent_id"]: a["status"] for a in agents}[agent_id] == "completed"


async def follow(url: str, query: str, seen: list[dict[str, Any]]) -> None:
    """Append every frame of `url`'s WS /ws?`query` to `seen` until the socket ends."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{url}/ws?{query}", heartbeat=None) as ws,
    ):
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            seen.append(json.loads(msg.data))


def is_edge(pid: int) -> bool:
    try:
        return b"agentops.services.edge" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


async def test_a_ws_follower_resumes_on_the_other_edge_after_kill_9(edges: Edges) -> None:
    """A client following a running task on edge 1 loses it to kill -9 and reconnects to edge 2
    with since=<last seq seen>: what it saw plus what edge 2 sends equals the full replay
    from since=0 (no gap, no duplicate, in order), on either edge."""
    system = edges.system
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        created = await create(http, {**SEED, "context": steps(10, delay_ms=250)})
    task_id = created["task_id"]
    seen: list[dict[str, Any]] = []
    reader = asyncio.create_task(follow(system.url, f"since=0&task_id={task_id}", seen))

    def mid_run() -> bool:
        return sum(e["type"] == "agent.step" for e in seen) >= 3 or reader.done()

    await until(mid_run, timeout=60, what="three steps seen")
    assert not reader.done(), "the follower's socket ended before the kill"
    victim = system.pids()["edge"]
    assert is_edge(victim)
    os.kill(victim, signal.SIGKILL)
    await asyncio.wait_for(reader, 30)  # the socket ends with the process
    assert seen and all(e["type"] != "task.completed" for e in seen), "not mid-run"
    last = seen[-1]["seq"]
    rest = await ws_events(edges.url2, f"since={last}&task_id={task_id}", "task.completed")
    full = await ws_events(edges.url2, f"since=0&task_id={task_id}", "task.completed")
    assert rest and seen + rest == full
    seqs = [e["seq"] for e in full]
    assert seqs == sorted(set(seqs))
    steps_seen = [e["data"]["step"] for e in full if e["type"] == "agent.step"]
    assert steps_seen == list(range(1, 12))

    # Edge 1 is restarted by `agentops up`: its replay is the same.
    def restarted() -> bool:
        pid = system.pids().get("edge")
        return pid is not None and pid != victim and healthy(system.url)

    await eventually(lambda: asyncio.to_thread(restarted), timeout=60, what="edge 1 restarted")
    assert await ws_events(system, f"since=0&task_id={task_id}", "task.completed") == full
