"""The cluster configs `agentops init --cluster-nodes 3` writes (deploy/compose's), run for real:
three nats-servers, rewritten only where a loopback test must (each node's address and ports,
its store), form a JetStream cluster in which every user keeps to its own rights."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig

from agentops import credentials, natsconf
from agentops.cli import main
from agentops.natsserver import NatsServer, free_port
from tests.helpers import eventually

pytestmark = pytest.mark.integration
HOSTS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Path, list[NatsServer]]]:
    """The generated node configs for HOSTS, each started from a copy of its directory."""
    out = tmp_path / "cluster"
    argv = ["init", "--data-dir", str(tmp_path / "data"), "--replicas", "2", "--cluster-nodes"]
    assert main([*argv, "3", "--cluster-out", str(out), "--cluster-hosts", ",".join(HOSTS)]) == 0
    routes = {h: free_port(h) for h in HOSTS}
    routes_text = (out / natsconf.ROUTES_FILE).read_text()
    for host, port in routes.items():
        routes_text = routes_text.replace(
            f"@{host}:{natsconf.DEPLOY_ROUTE_PORT}", f"@{host}:{port}"
        )
    servers = []
    for i, host in enumerate(HOSTS, 1):
        node_dir = tmp_path / f"node-{i}"
        node_dir.mkdir()
        (node_dir / natsconf.AUTH_FILE).write_text((out / natsconf.AUTH_FILE).read_text())
        (node_dir / natsconf.ROUTES_FILE).write_text(routes_text)
        port = free_port(host)
        text = (out / natsconf.deploy_node_file(i)).read_text()
        for old, new in {
            f'"0.0.0.0:{natsconf.DEPLOY_CLIENT_PORT}"': f'"{host}:{port}"',
            f'"0.0.0.0:{natsconf.DEPLOY_ROUTE_PORT}"': f'"{host}:{routes[host]}"',
            f'"127.0.0.1:{natsconf.DEPLOY_MONITOR_PORT}"': f'"{host}:{free_port(host)}"',
            '"/data/jetstream"': f'"{node_dir / "js"}"',
        }.items():
            assert text.count(old) == 1, old
            text = text.replace(old, new)
        (node_dir / "node.conf").write_text(text)
        servers.append(
            NatsServer(
                store_dir=node_dir / "js", host=host, port=port, config=node_dir / "node.conf",
                log_file=node_dir / "nats.log",
            )
        )  # fmt: skip
    try:
        for server in servers:
            server.start()
        yield tmp_path, servers
    finally:
        for server in servers:
            server.stop()


async def test_generated_cluster_replicates_and_keeps_users_to_their_rights(
    cluster: tuple[Path, list[NatsServer]],
) -> None:
    """A replica's orchestrator credential creates an R3 stream across the three nodes; the
    edge's replica is refused stream creation; no credential, no connection."""
    base, servers = cluster
    found = credentials.existing(base / "data")

    async def connect(name: str, server: NatsServer) -> Client:
        return await nats.connect(
            server.url, nkeys_seed_str=found[name].seed.decode(), allow_reconnect=False,
            inbox_prefix=f"_INBOX.agentops-{name.split(natsconf.REPLICA)[0]}".encode(),
        )  # fmt: skip

    orchestrator = await connect("orchestrator@2", servers[1])
    try:
        js = orchestrator.jetstream()
        config = StreamConfig(name="AGENTOPS_WORK", subjects=["agentops.task.>"], num_replicas=3)

        async def created() -> object:
            try:
                return await js.add_stream(config)
            except Exception as exc:  # no meta leader yet
                raise AssertionError(exc) from exc

        info = await eventually(created, timeout=30, interval=0.5, what="an R3 stream")
        assert info.cluster is not None and info.cluster.leader in HOSTS
        assert {r.name for r in info.cluster.replicas or []} | {info.cluster.leader} == set(HOSTS)
    finally:
        await orchestrator.close()

    edge = await connect("edge@2", servers[0])
    try:
        with pytest.raises(Exception):  # noqa: B017 - a denied request answers nothing
            await edge.jetstream(timeout=2).add_stream(StreamConfig(name="X", subjects=["x.>"]))
    finally:
        await edge.close()
    log = "".join((base / f"node-{i}" / "nats.log").read_text() for i in (1, 2, 3))
    assert re.search(r'Publish Violation - Subject "\$JS\.API\.STREAM\.CREATE\.X"', log)

    with pytest.raises(Exception, match="Authorization Violation"):
        await nats.connect(
            servers[2].url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2
        )
