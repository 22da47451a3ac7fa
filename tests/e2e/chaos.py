"""Chaos on a clustered system: tasks of appends, kills of nodes and replicas, what to check.

Shared by `tests/e2e/test_cluster.py` and `bench/bench_chaos.py`. A task is a mock script of
appends to its workspace's `log.txt` (line `<tag> <i>`): a tool call ran twice iff a line is
there twice. Events are followed live over WS /ws (reconnecting from the last seq) and
compared with the replay afterwards. A stall after a kill at time K is, for each task that
was running at K, the time from K to its first event after K; the longest is the figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import httpx

from agentops.embedded import node_name, store_dir
from tests.e2e.conftest import System
from tests.helpers import eventually

TYPES = ("backend_developer", "devops_engineer", "frontend_developer")
WORK = "AGENTOPS_WORK"
AGENTS = "KV_agentops_agents"


def appends(tag: str, steps: int, delay_ms: int) -> dict[str, Any]:
    script = [
        {"tool": "write_file", "args": {"path": "log.txt", "content": f"{tag} {i}\n", "mode": "append"}}
        for i in range(steps)
    ]  # fmt: skip
    return {"mock": {"script": script, "delay_ms": delay_ms}}


async def submit(
    http: httpx.AsyncClient, tasks: int, steps: int, delay_ms: int
) -> list[dict[str, Any]]:
    created = []
    for i in range(tasks):
        body = {"agent_type": TYPES[i % len(TYPES)], "description": f"chaos {i}",
                "context": appends(f"T{i}", steps, delay_ms), "max_steps": steps + 5}  # fmt: skip
        resp = await http.post("/tasks", json=body)
        assert resp.status_code == 201, resp.text
        created.append(resp.json())
    return created


@dataclass
class Feed:
    """WS /ws followed live from seq 0, reconnecting from the last seq it saw."""

    url: str
    events: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self) -> Feed:
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                since = self.events[-1]["seq"] if self.events else 0
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with session.ws_connect(f"{self.url}/ws?since={since}") as ws:
                        async for msg in ws:
                            if msg.type == aiohttp.WSMsgType.TEXT:
                                event = json.loads(msg.data)
                                event["_seen"] = time.time()
                                self.events.append(event)
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def replay(url: str, until_seq: int) -> list[dict[str, Any]]:
    """Every event from the start, as a client reads it; a 503 (the edge's feed being
    re-established after a kill) is retried, as the contract says to."""

    async def attempt() -> list[dict[str, Any]] | None:
        out: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as session:
            try:
                ws = await session.ws_connect(f"{url}/ws?since=0")
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 503:
                    return None
                raise
            async with ws:
                while not out or out[-1]["seq"] < until_seq:
                    msg = await ws.receive(timeout=60)
                    assert msg.type == aiohttp.WSMsgType.TEXT, msg
                    out.append(json.loads(msg.data))
        return out

    return await eventually(attempt, timeout=60, interval=0.5, what="a replay from since=0")


async def health(http: httpx.AsyncClient) -> dict[str, Any]:
    with contextlib.suppress(httpx.HTTPError, ValueError):
        body = (await http.get("/health")).json()
        if isinstance(body, dict):
            return body
    return {}


async def whole(http: httpx.AsyncClient, timeout: float = 120) -> None:
    """Wait until /health is healthy and no stream has a lagging replica (a restarted node
    caught up), so the next kill meets a whole cluster."""

    async def probe() -> bool:
        body = await health(http)
        streams = body.get("cluster", {}).get("streams", {}).values()
        caught_up = all(not x.get("lagging") for x in streams)
        return body.get("status") == "healthy" and caught_up

    await eventually(probe, timeout=timeout, interval=0.5, what="the cluster whole, caught up")


async def leader(http: httpx.AsyncClient, stream: str) -> str:
    """The node leading `stream`, as /health shows it."""

    async def probe() -> str | None:
        info = (await health(http)).get("cluster", {}).get("streams", {}).get(stream, {})
        leader: str | None = info.get("leader")
        return leader

    return await eventually(probe, timeout=30, interval=0.2, what=f"a leader of {stream}")


def node_index(name: str) -> int:
    (index,) = (i for i in range(1, 10) if node_name(i) == name)
    return index


def node_pid(system: System, index: int) -> int | None:
    return system.pids().get(f"nats-server@{index}")


async def kill_node(system: System, index: int, wipe: bool = False) -> float:
    """SIGKILL node `index` (its store deleted first when `wipe`); the kill's time."""
    pid = node_pid(system, index)
    assert pid is not None, f"node {index} is not running"
    if wipe:  # the node comes back empty: the cluster must fill it again
        os.kill(pid, signal.SIGSTOP)
        shutil.rmtree(store_dir(system.data_dir, index), ignore_errors=True)
    os.kill(pid, signal.SIGKILL)
    killed = time.time()

    async def back() -> bool:
        new = node_pid(system, index)
        return new is not None and new != pid

    await eventually(back, timeout=60, interval=0.1, what=f"node {index} restarted")
    return killed


async def kill_replica(system: System, process: str, replicas: int) -> float:
    name = random.choice([process, *(f"{process}@{n}" for n in range(2, replicas + 1))])
    pid = system.pids()[name]
    os.kill(pid, signal.SIGKILL)
    return time.time()


async def all_completed(
    http: httpx.AsyncClient, created: list[dict[str, Any]], timeout: float
) -> None:
    async def finished() -> list[str] | None:
        statuses = []
        for c in created:
            try:
                statuses.append((await http.get(f"/tasks/{c['task_id']}")).json()["status"])
            except (httpx.HTTPError, KeyError, ValueError):
                return None
        return statuses if all(st == "completed" for st in statuses) else None

    await eventually(finished, timeout=timeout, interval=0.5, what="every task completed")


async def all_listed_completed(http: httpx.AsyncClient, created: list[dict[str, Any]]) -> None:
    """Every agent of `created` is listed `completed` by GET /agents: its summary survived the
    kills (or the replay of its last transition wrote it again)."""
    agents = {c["agent_id"] for c in created}

    async def listed() -> bool:
        rows = (await http.get("/agents", params={"limit": 1000})).json()["agents"]
        return {a["agent_id"] for a in rows if a["status"] == "completed"} >= agents

    await eventually(listed, timeout=15, interval=0.5, what="every agent listed completed")


def calls_ran_once(system: System, created: list[dict[str, Any]], steps: int) -> list[str]:
    """Problems: a line written twice (a call ran twice), or a line missing."""
    problems = []
    for i, c in enumerate(created):
        lines = (system.data_dir / "workspaces" / c["task_id"] / "log.txt").read_text().splitlines()
        if len(lines) != len(set(lines)):
            problems.append(f"task {i}: a call ran twice")
        if len(set(lines)) < steps - 1:  # a kill inside an append may leave it `interrupted`
            problems.append(f"task {i}: {len(set(lines))} of {steps} lines")
    return problems


def _ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


def stalls(events: Iterable[dict[str, Any]], kills: Iterable[float]) -> list[float]:
    """For each kill, the longest time a running task waited for its next event."""
    return [max(waits, default=0.0) for waits in waits_after(events, kills)]


def waits_after(events: Iterable[dict[str, Any]], kills: Iterable[float]) -> list[list[float]]:
    """For each kill, how long each task running then waited for its next event."""
    by_task: dict[str, list[float]] = {}
    for e in events:
        if e.get("task_id"):
            by_task.setdefault(e["task_id"], []).append(_ts(e))
    for times in by_task.values():
        times.sort()
    out = []
    for k in kills:
        waits = []
        for times in by_task.values():
            before = [t for t in times if t <= k]
            after = [t for t in times if t > k]
            if before and after:  # running at the kill (had started, had not finished)
                waits.append(after[0] - k)
        out.append(waits)
    return out


async def new_leader(http: httpx.AsyncClient, stream: str, old: str, since: float) -> float:
    """Seconds from `since` until /health names a leader of `stream` again after `old` is
    gone: first no leader (or another), then one (another node, or `old` back again)."""

    async def current() -> str | None:
        info = (await health(http)).get("cluster", {}).get("streams", {}).get(stream, {})
        leader: str | None = info.get("leader")
        return leader

    async def gone() -> bool:
        return await current() != old

    async def elected() -> bool:
        return await current() is not None

    await eventually(gone, timeout=60, interval=0.05, what=f"{old} no longer leading {stream}")
    await eventually(elected, timeout=60, interval=0.05, what=f"a new leader of {stream}")
    return time.time() - since
