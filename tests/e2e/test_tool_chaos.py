"""kill -9 of random processes, nats-server included, every 2-4 s under many tasks (issue 18).

Every task completes; no tool call's side effect happens twice (each call appends its own line
to the task's log.txt: no line twice); and `interrupted` answers only calls whose executor was
killed while it ran them (each interrupted call's claim names a tool-executor PID this test
killed, claimed before that kill). The figures are printed. The long run (60 tasks) is under
`-m chaos`; a short one runs by default.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import nats
import pytest
from nats.js.api import DeliverPolicy

from agentops.protocol import subjects as s
from agentops.services.tool_calls import RECORD_ADAPTER, ToolCallRecord
from agentops.store.kv import scan_with
from tests.e2e.chaos import all_listed_completed
from tests.e2e.conftest import System, _is_ours
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

TYPES = ("backend_developer", "devops_engineer", "frontend_developer")
CODE = shutil.which("bwrap") is not None  # execute_code runs only in the sandbox


@dataclass(frozen=True)
class Kill:
    name: str
    pid: int
    at: datetime


def plan(tag: str, steps: int, delay_ms: int) -> dict[str, Any]:
    """A mock run of `steps` appends, one line each; every fourth is code that appends and then
    runs for 0.3 s (a call a kill can cut off while it runs)."""
    script = []
    for i in range(steps):
        line = f"{tag} {i}"
        if CODE and i % 4 == 3:
            code = f"echo '{line}' >> log.txt; sleep 0.3"
            script.append({"tool": "execute_code", "args": {"language": "bash", "code": code}})
        else:
            args = {"path": "log.txt", "content": f"{line}\n", "mode": "append"}
            script.append({"tool": "write_file", "args": args})
    return {"mock": {"script": script, "delay_ms": delay_ms}}


WEIGHTS = {"tool-executor": 3, "nats-server": 3}  # the others 1 each


async def chaos(
    system: System, done: asyncio.Event, seconds: float, seed: int, first: tuple[str, ...] = ()
) -> list[Kill]:
    """Every 2-4 s, kill -9 a live process of the system (never the supervisor): `first` in
    turn, then at random (the executor and nats-server more often: `WEIGHTS`)."""
    rng, kills = random.Random(seed), []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:  # the pace of the kills, cut short when the tasks are done
            await asyncio.wait_for(done.wait(), rng.uniform(2.0, 4.0))
            break
        except TimeoutError:
            pass
        try:
            live = {name: pid for name, pid in system.pids().items() if _is_ours(pid)}
        except (OSError, ValueError):  # processes.json being replaced
            continue
        if not live:
            continue
        names = sorted(live)
        name = first[len(kills)] if len(kills) < len(first) else ""
        if name not in live:
            name = rng.choices(names, [WEIGHTS.get(n, 1) for n in names])[0]
        os.kill(live[name], signal.SIGKILL)
        kills.append(Kill(name, live[name], datetime.now(UTC)))
    return kills


async def statuses(http: httpx.AsyncClient, task_ids: list[str]) -> dict[str, str] | None:
    out = {}
    for task_id in task_ids:
        try:
            resp = await http.get(f"/tasks/{task_id}")
        except httpx.HTTPError:  # the edge restarting, or reconnecting to nats-server
            return None
        if resp.status_code != 200:
            return None
        out[task_id] = resp.json()["status"]
    return out


async def interrupted_results(system: System) -> set[tuple[str, int, str]]:
    """(agent, step, call) of every `tool.result` event the agents emitted as interrupted."""
    nc = await nats.connect(system.nats_url, **system.admin)
    found: set[tuple[str, int, str]] = set()
    try:
        js = nc.jetstream()
        info = await js.stream_info(s.EVENTS_STREAM)
        sub = await js.subscribe(
            s.EVENTS_SUBJECTS[0], ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        last = info.state.last_seq
        while True:
            msg = await sub.next_msg(timeout=10)
            event = json.loads(msg.data)
            error = event.get("data", {}).get("error") or {}
            if event["type"] == "tool.result" and error.get("code") == "interrupted":
                data = event["data"]
                found.add((event["agent_id"], data["step"], data["call_id"]))
            if msg.metadata.sequence.stream >= last:
                break
        await sub.unsubscribe()
    finally:
        await nc.close()
    return found


async def claims(system: System, agents: set[str]) -> list[ToolCallRecord]:
    """The tool-call records of `agents` (keyed `<agent_id>.<step>.<call>`)."""
    nc = await nats.connect(system.nats_url, **system.admin)
    try:
        kv = await nc.jetstream().key_value(s.TOOL_CALLS_BUCKET)
        found = await scan_with(kv, lambda data, key, _: (key, RECORD_ADAPTER.validate_json(data)))
    finally:
        await nc.close()
    return [record for key, record in found if key.split(".")[0] in agents]


async def run_chaos(
    system: System,
    tasks: int,
    steps: int,
    chaos_s: float,
    seed: int,
    first: tuple[str, ...] = (),
    delay_ms: int = 20,
) -> str:
    """Run `tasks` tasks under chaos; check them; the figures as one line."""
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        created = []
        for i in range(tasks):
            body = {"agent_type": TYPES[i % 3], "description": f"chaos {i}",
                    "context": plan(f"T{i}", steps, delay_ms), "max_steps": steps + 5}  # fmt: skip
            resp = await http.post("/tasks", json=body)
            assert resp.status_code == 201, resp.text
            created.append(resp.json())
        task_ids = [c["task_id"] for c in created]
        done = asyncio.Event()
        killer = asyncio.create_task(chaos(system, done, chaos_s, seed, first))

        async def finished() -> dict[str, str] | None:
            found = await statuses(http, task_ids)
            if found is None or not all(st in ("completed", "failed") for st in found.values()):
                return None
            return found

        try:
            final = await eventually(
                finished, timeout=chaos_s + 240, interval=1.0, what="every task finished"
            )
        finally:
            done.set()
            kills = await killer
    assert Counter(final.values()) == {"completed": tasks}, final

    agents = {c["agent_id"] for c in created}
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        await all_listed_completed(http, created)
    records = await claims(system, agents)
    assert all(r.state == "done" and r.reply is not None for r in records), "an unanswered claim"
    by_agent = Counter(r.reply.agent_id for r in records if r.reply and r.reply.ok)
    for c in created:
        lines = (system.data_dir / "workspaces" / c["task_id"] / "log.txt").read_text()
        counts = Counter(lines.splitlines())
        assert max(counts.values()) == 1, f"a call ran twice: {counts.most_common(1)}"
        assert len(counts) >= by_agent[c["agent_id"]], "a call answered ok left no line"

    executors = {k.pid: k.at for k in kills if k.name == "tool-executor"}
    cut_off = [
        r for r in records if r.reply and r.reply.error and r.reply.error.code == "interrupted"
    ]
    ages = []  # how long before its executor's kill each interrupted call was claimed
    for r in cut_off:  # claimed by an executor this test killed, before it was killed
        pid = int(r.owner.split(":")[1])
        assert pid in executors, f"{r.request_id} interrupted, but its claimer {r.owner} lives"
        assert r.started_at is not None and r.started_at <= executors[pid], r
        ages.append((executors[pid] - r.started_at).total_seconds())
    seen = {found for found in await interrupted_results(system) if found[0] in agents}
    stored = {(r.reply.agent_id, r.reply.step, r.reply.call_id) for r in cut_off if r.reply}
    assert seen == stored, "an agent got `interrupted` that was not a cut-off call's answer"
    by_victim = Counter(k.name for k in kills)
    by_tool = Counter(r.reply.name for r in cut_off if r.reply)
    figures = (
        f"{tasks} tasks, {len(records)} side-effecting calls, {len(kills)} kills "
        f"({', '.join(f'{n} {c}' for n, c in sorted(by_victim.items()))}); "
        f"{len(cut_off)} interrupted ({', '.join(f'{n} {c}' for n, c in sorted(by_tool.items()))}"
        f"), each claimed by a tool-executor killed while it ran (at most {max(ages, default=0):.2f}"
        f" s before the kill, by {len({o.owner for o in cut_off})} of {len(executors)} killed)"
    )
    print(figures)
    return figures


async def test_smoke_chaos_every_task_completes_and_no_call_runs_twice(
    system: System,
) -> None:
    """kill -9 of the executor, nats-server, the executor under 9 tasks: all complete, no call
    runs twice, `interrupted` only for calls cut off."""
    first = ("tool-executor", "nats-server", "tool-executor")
    await run_chaos(system, tasks=9, steps=10, chaos_s=9, seed=18, first=first, delay_ms=400)


@pytest.mark.chaos
@pytest.mark.timeout(900)
async def test_chaos_60_tasks_kill_9_every_2_to_4_s(system: System) -> None:
    """kill -9 of random processes (nats-server too) every 2-4 s under 60 tasks: all complete,
    no duplicate side effect, `interrupted` only for calls cut off while running."""
    await run_chaos(system, tasks=60, steps=20, chaos_s=120, seed=int(time.time()), delay_ms=200)
