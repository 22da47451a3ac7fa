"""The bus on a 3-node cluster from the embedded config generator: replicas, scaling, quorum."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from agentops import credentials
from agentops.bus.connection import connect
from agentops.bus.setup import cluster_size, consistent_buckets, ensure_jetstream, replicas_for
from agentops.config import mask_url
from agentops.edge.health import cluster_status
from agentops.embedded import EmbeddedNats
from agentops.natsserver import NatsServer, free_port
from agentops.protocol import subjects as s
from tests.helpers import eventually


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EmbeddedNats]:
    nodes = EmbeddedNats(tmp_path, free_port(), tmp_path, None, nodes=3)
    try:
        for server in nodes.servers:
            server.start()
        yield nodes
    finally:
        for server in nodes.servers:
            server.stop()


@pytest.fixture
async def admin(cluster: EmbeddedNats) -> AsyncIterator[Client]:
    seed = str(credentials.seed_path(cluster.data_dir, credentials.ADMIN))
    nc = await connect(cluster.url, "test", None, nkeys_seed=seed)
    try:
        yield nc
    finally:
        await nc.close()


async def replicas(nc: Client) -> dict[str, int]:
    js = nc.jetstream()
    return {n: (await js.stream_info(n)).config.num_replicas or 1 for n in s.declared_streams()}


async def test_an_r1_deployment_on_a_cluster_is_scaled_to_r3_in_place(admin: Client) -> None:
    """Streams, buckets and uploads declared R1 on 3 nodes become R3 when declared again,
    keeping what they hold."""
    assert cluster_size(admin) == 3 and replicas_for(None, 3) == 3
    js = admin.jetstream()
    buckets = await ensure_jetstream(js, replicas=1)
    assert set((await replicas(admin)).values()) == {1}
    await buckets[s.TASKS_BUCKET].put("t1", b"{}")
    await ensure_jetstream(js, replicas=replicas_for(None, cluster_size(admin)))
    assert set((await replicas(admin)).values()) == {3}
    fresh = consistent_buckets(admin, js, await ensure_jetstream(js, replicas=3))
    assert (await fresh[s.TASKS_BUCKET].get("t1")).value == b"{}"


async def test_cluster_status_shows_leaders_and_a_lost_quorum(
    cluster: EmbeddedNats, admin: Client
) -> None:
    """/health's cluster view: every stream led by one of the three nodes; with two nodes
    gone every stream has lost its quorum."""
    js = admin.jetstream()
    await ensure_jetstream(js, replicas=3)
    status = await cluster_status(js, 2.0)
    assert status["nodes"] == ["agentops-1", "agentops-2", "agentops-3"]
    assert status["quorum_lost"] == []
    assert all(x["leader"] in status["nodes"] for x in status["streams"].values())
    for server in cluster.servers[1:]:
        server.stop()

    async def lost() -> bool:
        status = await cluster_status(js, 0.5)
        return set(status["quorum_lost"]) == set(s.declared_streams())

    await eventually(lost, timeout=30, interval=0.5, what="every stream without its quorum")


async def test_a_lone_server_is_one_node_with_r1_streams(nats_server: NatsServer) -> None:
    """One server: replicas 1, the node's name as every stream's leader, no quorum lost."""
    nc = await nats.connect(nats_server.url)
    try:
        assert cluster_size(nc) == 1 and replicas_for(None, 1) == 1
        js = nc.jetstream()
        await ensure_jetstream(js, replicas=replicas_for(None, cluster_size(nc)))
        status = await cluster_status(js, 2.0)
        assert status["nodes"] == ["agentops"] and status["quorum_lost"] == []
    finally:
        await nc.close()


def test_a_cluster_url_list_is_masked_server_by_server() -> None:
    """Each URL of a list loses its password in logs."""
    url = "nats://a:pw1@h1:4222, nats://b:pw2@h2:4222,nats://h3:4222"
    assert mask_url(url) == "nats://a:***@h1:4222,nats://b:***@h2:4222,nats://h3:4222"
