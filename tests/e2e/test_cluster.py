"""`agentops up --nats-cluster 3` with replicas: R3 streams, and kill -9 of nodes under work.

The short case runs by default (one kill of the work stream's leader node and one agent
replica under 4 tasks); the long one (`-m chaos`: 100 tasks, a kill every few seconds for a
minute, then a node whose store is deleted before it comes back) is the issue's chaos run.
`bench/bench_chaos.py` prints the stalls.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import httpx
import pytest

from agentops.protocol import subjects as s
from tests.e2e import chaos
from tests.e2e.conftest import start_system
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

SCALE = ",".join([*(f"agent-{t}=2" for t in chaos.TYPES), "tool-executor=2"])


async def test_cluster_of_three_survives_its_work_leader_and_a_replica_killed(
    tmp_path: Path,
) -> None:
    """R3 on 3 nodes; kill -9 of the work stream's leader node and an agent replica mid-run:
    every task completes, no call runs twice, the WS feed seen live equals the replay."""
    system = start_system(tmp_path / "data", nats_cluster=3, scale=SCALE)
    feed = chaos.Feed(system.url).start()
    try:
        async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
            body = await chaos.health(http)
            assert body["status"] == "healthy", body
            cluster = body["cluster"]
            assert cluster["nodes"] == ["agentops-1", "agentops-2", "agentops-3"]
            assert set(cluster["streams"]) == set(s.declared_streams())
            assert all(x["replicas"] == 3 for x in cluster["streams"].values()), cluster
            assert body["services"]["tool-executor"]["instances"] == 2

            steps = 20
            created = await chaos.submit(http, 4, steps, delay_ms=40)

            async def under_way() -> bool:
                return sum(e["type"] == "tool.result" for e in feed.events) >= 8

            await eventually(under_way, timeout=30, what="tasks under way")
            work_leader = await chaos.leader(http, chaos.WORK)
            kills = [await chaos.kill_node(system, chaos.node_index(work_leader))]
            kills.append(await chaos.kill_replica(system, "agent-backend_developer", 2))
            await chaos.all_completed(http, created, timeout=90)
            await chaos.all_listed_completed(http, created)
            assert chaos.calls_ran_once(system, created, steps) == []

            async def whole_again() -> bool:
                body = await chaos.health(http)
                return body.get("status") == "healthy" and len(body["cluster"]["nodes"]) == 3

            await eventually(whole_again, timeout=30, interval=0.5, what="healthy again")
        last = feed.events[-1]["seq"]
        live = [e["seq"] for e in feed.events]
        assert live == [e["seq"] for e in await chaos.replay(system.url, last)]
        print(
            "stalls after each kill (s):", [round(x, 2) for x in chaos.stalls(feed.events, kills)]
        )
    finally:
        await feed.stop()
        await asyncio.to_thread(system.stop)


@pytest.mark.chaos
@pytest.mark.timeout(1200)
async def test_chaos_a_minute_of_kills_under_100_tasks(tmp_path: Path) -> None:
    """100 tasks; every few seconds for a minute kill -9 the work leader node, the agents
    bucket's leader node, a replica of each process; then a node whose store is deleted:
    every task completes, no call runs twice, live WS equals the replay."""
    system = start_system(tmp_path / "data", nats_cluster=3, scale=SCALE)
    feed = chaos.Feed(system.url).start()
    try:
        async with httpx.AsyncClient(base_url=system.url, timeout=30) as http:
            steps = 30
            created = await chaos.submit(http, 100, steps, delay_ms=20)
            kills: list[float] = []
            victims = ["agent-backend_developer", "agent-devops_engineer", "tool-executor"]
            end = time.monotonic() + 60
            while time.monotonic() < end:
                for stream in (chaos.WORK, chaos.AGENTS):
                    index = chaos.node_index(await chaos.leader(http, stream))
                    kills.append(await chaos.kill_node(system, index))
                    await chaos.whole(http)  # one node down at a time: R3 keeps its quorum
                kills.append(await chaos.kill_replica(system, random.choice(victims), 2))
            index = chaos.node_index(await chaos.leader(http, chaos.WORK))
            kills.append(await chaos.kill_node(system, index, wipe=True))
            await chaos.whole(http)
            await chaos.all_completed(http, created, timeout=300)
            await chaos.all_listed_completed(http, created)
            assert chaos.calls_ran_once(system, created, steps) == []
        last = feed.events[-1]["seq"]
        assert [e["seq"] for e in feed.events] == [
            e["seq"] for e in await chaos.replay(system.url, last)
        ]
        print("stalls (s):", [round(x, 2) for x in chaos.stalls(feed.events, kills)])
    finally:
        await feed.stop()
        await asyncio.to_thread(system.stop)
