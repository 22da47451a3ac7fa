"""Benchmark: how long work stalls when a node of a 3-node cluster is killed (kill -9).

Starts `agentops up --nats-cluster 3` with 2 replicas of every agent type and of the tool
executor in a temporary data dir, runs tasks of appends through the mock LLM, and kills, one
after the other (each once the cluster is whole and healthy again):
1. the node leading AGENTOPS_WORK,
2. the node leading the agents bucket (KV_agentops_agents),
3. the node leading AGENTOPS_WORK again, its store deleted before it comes back.

For each kill it prints how long /health took to name a new leader of that stream (the
JetStream election: the floor) and, over the tasks running at the kill, the longest and the
median time to their next event (the stall). At the end every task must have completed with
every tool call run once (each append's line is in its log once).

    python bench/bench_chaos.py [--tasks 30] [--steps 40] [--delay-ms 20] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests` of this checkout

from tests.e2e import chaos
from tests.e2e.conftest import System, start_system
from tests.helpers import eventually

SCALE = ",".join([*(f"agent-{t}=2" for t in chaos.TYPES), "tool-executor=2"])
KILLS = (
    ("work stream leader", chaos.WORK, False),
    ("agents bucket leader", chaos.AGENTS, False),
    ("work leader, store deleted", chaos.WORK, True),
)


async def one_round(system: System, feed: chaos.Feed, args: argparse.Namespace) -> None:
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
        await chaos.whole(http)
        started = len(feed.events)
        created = await chaos.submit(http, args.tasks, args.steps, args.delay_ms)
        kills: list[tuple[str, float, float]] = []
        for name, stream, wipe in KILLS:

            async def moving(mark: int = len(feed.events)) -> bool:
                return bool(len(feed.events) - mark >= args.tasks * 2)

            await eventually(moving, timeout=60, what="tasks under way")
            old = await chaos.leader(http, stream)
            election = asyncio.create_task(chaos.new_leader(http, stream, old, time.time()))
            killed = await chaos.kill_node(system, chaos.node_index(old), wipe=wipe)
            kills.append((name, killed, await election))
            await chaos.whole(http)
        await chaos.all_completed(http, created, timeout=300)
        problems = chaos.calls_ran_once(system, created, args.steps)
        assert problems == [], problems
    waits = chaos.waits_after(feed.events[started:], [k for _, k, _ in kills])
    for (name, _, elected), each in zip(kills, waits, strict=True):
        worst = max(each, default=0.0)
        median = statistics.median(each) if each else 0.0
        print(f"| {name} | {elected:.2f} | {worst:.2f} | {median:.2f} | {len(each)} |", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=30)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--delay-ms", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        system = await asyncio.to_thread(
            start_system, Path(tmp) / "data", nats_cluster=3, scale=SCALE
        )
        feed = chaos.Feed(system.url).start()
        try:
            print("| kill -9 of | new leader after (s) | longest stall (s) | median (s) | tasks |")
            print("|---|---|---|---|---|")
            for _ in range(args.rounds):
                await one_round(system, feed, args)
            print(f"every task completed, every call ran once ({args.tasks} tasks a round)")
        finally:
            await feed.stop()
            await asyncio.to_thread(system.stop)


if __name__ == "__main__":
    asyncio.run(main())
