"""Replicas and cluster nodes as `agentops up` builds them: scale, credentials, node configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentops import credentials, natsconf
from agentops.bus.auth import principal
from agentops.bus.setup import replicas_for
from agentops.config import nats_servers
from agentops.embedded import EmbeddedNats
from agentops.processes import parse_scale, select_processes, with_replicas
from agentops.protocol.errors import ConfigError

TYPES = ("backend_developer", "devops_engineer")


def test_scale_adds_numbered_replicas_with_the_same_command() -> None:
    """`--scale P=3` runs P, P@2 and P@3 with one command line."""
    every = select_processes(TYPES)
    scale = parse_scale(["agent-backend_developer=3,tool-executor=2", "llm-gateway=1"])
    out = with_replicas(every, scale, TYPES)
    assert [n for n in out if n.startswith("agent-backend")] == [
        "agent-backend_developer",
        "agent-backend_developer@2",
        "agent-backend_developer@3",
    ]
    assert out["tool-executor@2"] == every["tool-executor"]
    assert "llm-gateway@2" not in out


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (["tool-executor"], "PROCESS=N"),
        (["tool-executor=0"], "PROCESS=N"),
        (["tool-executor=x"], "PROCESS=N"),
        (["agent-nobody=2"], "unknown process"),
        (["edge=2"], "one edge"),
    ],
)
def test_a_bad_scale_is_one_clear_error(raw: list[str], problem: str) -> None:
    """A malformed count, an unknown process or a scaled edge is refused, saying which."""
    with pytest.raises(ConfigError, match=problem):
        with_replicas(select_processes(TYPES), parse_scale(raw), TYPES)


def test_a_process_left_elsewhere_cannot_be_scaled_here() -> None:
    """Scaling a process `--without` leaves out is an error."""
    with pytest.raises(ConfigError, match="does not run here"):
        with_replicas(select_processes(TYPES, ["llm-gateway"]), {"llm-gateway": 2}, TYPES)


def test_a_replica_connects_with_its_own_credential() -> None:
    """Replica 1 is the process itself; replica n > 1 is `<process>@<n>`."""
    assert principal("tool-executor", None) == "tool-executor"
    assert principal("tool-executor", "1") == "tool-executor"
    assert principal("tool-executor", "2") == "tool-executor@2"


def test_replicas_follow_the_cluster_unless_configured() -> None:
    """R3 from three nodes, R1 below; `[nats] replicas` wins."""
    assert [replicas_for(None, n) for n in (1, 2, 3, 5)] == [1, 1, 3, 3]
    assert replicas_for(1, 3) == 1


def test_a_url_list_becomes_nats_py_servers() -> None:
    """A comma-separated NATS_URL is one seed URL per node."""
    assert nats_servers("nats://a:1, nats://b:2,,nats://c:3") == [
        "nats://a:1",
        "nats://b:2",
        "nats://c:3",
    ]


def test_cluster_nodes_share_users_and_route_to_each_other(tmp_path: Path) -> None:
    """Three node configs from the one generator: the same users (replicas included), a
    name, store and route port each, routes to the two others with the route secret."""
    nodes = EmbeddedNats(tmp_path, 14222, tmp_path, None, nodes=3, extra=["tool-executor@2"])
    texts = [natsconf_text(tmp_path, i) for i in (1, 2, 3)]
    secret = credentials.route_secret(tmp_path)
    found = credentials.existing(tmp_path)
    assert "tool-executor@2" in found
    for i, text in enumerate(texts):
        node = nodes.nodes[i]
        assert node is not None
        assert f'server_name: "agentops-{i + 1}"' in text
        assert f"jetstream-cluster/node-{i + 1}" in text
        assert found["tool-executor@2"].public_key in text
        assert text.count(f"{natsconf.ROUTE_USER}:{secret}@127.0.0.1:") == 2
        assert str(node.route_port) not in text.split("routes:")[1]
    assert len(set(nodes.ports)) == 3
    assert (tmp_path / "credentials" / credentials.ROUTE_SECRET).stat().st_mode & 0o077 == 0


def natsconf_text(data_dir: Path, index: int) -> str:
    return (data_dir / "nats" / f"node-{index}.conf").read_text()
