"""Benchmark: hand-offs between the stages of workflows.

Runs the real thing (`agentops up`, embedded nats-server, mock LLM at zero delay) in a
temporary data dir, starts `--workflows` (20) workflows of `--stages` (3) stages in a chain
at once, and prints the hand-off latency, p50 and p99: from a stage's end as the workflow
records it (`workflow.stage_finished`, after the stage's work was committed) to the next
stage's first LLM call (its agent's first `agent.step`), as a ratio to the raw JetStream hop
measured one at a time in the same run (as `bench_steps.py` does; target <= 10x). It also
prints the time from a stage's task ending (`task.completed`) to that first LLM call, which
includes committing the stage's work (a git commit in the tool executor).

Usage: python bench/bench_team.py [--workflows 20] [--stages 3] [--hops 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats
from bench_steps import pct, raw_hop  # this directory: run as `python bench/bench_team.py`

from agentops.natsserver import free_port
from agentops.protocol import subjects as s


def chain(n: int) -> dict[str, Any]:
    def stage(i: int) -> dict[str, Any]:
        script = [{"tool": "write_file", "args": {"path": f"s{i}.txt", "content": f"{i}\n"}}]
        return {
            "id": f"s{i}",
            "agent_type": "backend_developer",
            "description": f"stage {i}",
            "context": {"mock": {"delay_ms": 0, "script": script}},
            "depends_on": [f"s{i - 1}"] if i else [],
        }

    return {"name": "bench", "stages": [stage(i) for i in range(n)]}


async def collect(nc: Any, ids: set[str], timeout: float) -> list[dict[str, Any]]:
    """Every event until each workflow ended."""
    sub = await nc.jetstream().subscribe(s.events_filter(), ordered_consumer=True)
    events: list[dict[str, Any]] = []
    ended: set[str] = set()
    deadline = time.monotonic() + timeout
    while ids - ended:
        msg = await sub.next_msg(timeout=max(0.1, deadline - time.monotonic()))
        event = json.loads(msg.data)
        events.append(event)
        if event["type"] in ("workflow.completed", "workflow.failed", "workflow.cancelled"):
            ended.add(event["task_id"])
    await sub.unsubscribe()
    return events


def handoffs(events: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """(stage recorded finished -> next stage's first step, task ended -> that step), ms."""
    ts = datetime.fromisoformat
    first_step: dict[str, datetime] = {}
    task_end: dict[str, datetime] = {}
    finished: dict[tuple[str, str], tuple[datetime, str]] = {}
    started: dict[tuple[str, str], str] = {}
    for e in events:
        if e["type"] == "agent.step" and e["task_id"] not in first_step:
            first_step[e["task_id"]] = ts(e["ts"])
        elif e["type"] == "task.completed":
            task_end[e["task_id"]] = ts(e["ts"])
        elif e["type"] == "workflow.stage_finished":
            finished[e["task_id"], e["data"]["stage_id"]] = (ts(e["ts"]), e["data"]["task_id"])
        elif e["type"] == "workflow.stage_started":
            started[e["task_id"], e["data"]["stage_id"]] = e["data"]["task_id"]
    handoff, with_commit = [], []
    for (wf, stage), (at, task_id) in finished.items():
        nxt = started.get((wf, f"s{int(stage[1:]) + 1}"))
        if nxt is None or nxt not in first_step:
            continue
        handoff.append((first_step[nxt] - at).total_seconds() * 1000)
        if task_id in task_end:
            with_commit.append((first_step[nxt] - task_end[task_id]).total_seconds() * 1000)
    return handoff, with_commit


async def run(args: argparse.Namespace, base: str, nats_url: str) -> None:
    hops = await raw_hop(nats_url, args.hops, 0.003)
    nc = await nats.connect(nats_url, name="agentops-bench")
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        warm = (await http.post("/workflows", json=chain(2))).json()["workflow_id"]
        await collect(nc, {warm}, 60)
        started = time.perf_counter()
        ids = set()
        for _ in range(args.workflows):
            resp = await http.post("/workflows", json=chain(args.stages))
            resp.raise_for_status()
            ids.add(resp.json()["workflow_id"])
        events = await collect(nc, ids, 600)
        wall = time.perf_counter() - started
    await nc.close()
    mine = [
        e for e in events if e["task_id"] in ids or e["type"] in ("agent.step", "task.completed")
    ]
    handoff, with_commit = handoffs(mine)
    hop50 = pct(hops, 50)
    done = sum(1 for e in events if e["type"] == "workflow.completed" and e["task_id"] in ids)
    print(f"raw JetStream hop one at a time (3 ms apart), n={len(hops)}: p50 {hop50:.3f} ms")
    print(
        f"{args.workflows} workflows x {args.stages} stages at once: {done} completed in "
        f"{wall:.1f} s; {len(handoff)} hand-offs"
    )
    print(
        f"hand-off (stage finished -> next stage's first LLM call): p50 {pct(handoff, 50):.2f} ms"
        f" ({pct(handoff, 50) / hop50:.1f}x the hop, target <= 10x), p99 {pct(handoff, 99):.2f} ms"
        f" ({pct(handoff, 99) / hop50:.1f}x)"
    )
    print(
        f"from the stage's task ending, its commit included: p50 {pct(with_commit, 50):.2f} ms, "
        f"p99 {pct(with_commit, 99):.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=20)
    parser.add_argument("--stages", type=int, default=3)
    parser.add_argument("--hops", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentops-bench-team-") as tmp:
        port, nats_port = free_port(), free_port()
        env = {**os.environ, "AGENTOPS_LOG_LEVEL": "warning"}
        cmd = [
            sys.executable, "-m", "agentops.cli", "up", "--port", str(port),
            "--nats-port", str(nats_port), "--data-dir", str(Path(tmp) / "data"),
        ]  # fmt: skip
        up = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or up.poll() is not None:
                    raise SystemExit("agentops up did not become healthy")
                time.sleep(0.1)
            asyncio.run(run(args, base, f"nats://127.0.0.1:{nats_port}"))
        finally:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                up.kill()


if __name__ == "__main__":
    main()
