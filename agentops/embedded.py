"""The embedded nats-server's credentials and config, and applying a change to them.

`agentops up` (and `agentops init`, for Procfile and systemd users) keep one nkey per process,
plugin and operator role in the data dir (`credentials.py`) and write the server config that
names them (`natsconf.py`) to `<data-dir>/nats/nats.conf`. A data dir without credentials
(an older version's) gets them on its next start; the JetStream store is kept as it is.

Applying a change (`agentops rotate-credentials`, `agentops init --plugin`) while `agentops
up` runs, in the supervisor (`EmbeddedNats.apply`):
1. the config names the new keys and, for a name whose key changed, the previous one too;
   the server reloads it, and a connection with a new key is checked to be accepted;
2. each process whose key changed is restarted (stopped gracefully while its old key still
   works, started again with the new one);
3. the config drops the previous keys and the server reloads again: what still uses an old
   key (a plugin process run by the operator) is disconnected and must be restarted.
`agentops up --nats-cluster N` runs N such servers on loopback as one JetStream cluster: each
node its config (`nats/node-<n>.conf`, the same users plus its routes) and its own store
(`jetstream-cluster/node-<n>/`); a credential rotation rewrites and reloads every node.

`<data-dir>/nats/applied` then holds the fingerprint of the keys in force, which the CLI
waits for.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Final

import nats
import structlog

from agentops import credentials, natsconf
from agentops.config import nats_servers
from agentops.credentials import Credential
from agentops.natsserver import NatsServer, free_port
from agentops.protocol import permissions
from agentops.protocol.permissions import DEFAULT_SCOPE, Scope

log = structlog.get_logger(__name__)

CONFIG: Final = Path("nats") / "nats.conf"
APPLIED: Final = Path("nats") / "applied"
ACCEPT_TIMEOUT_S = 10.0


def standard_names(scope: Scope = DEFAULT_SCOPE) -> list[str]:
    """The credentials every data dir has: each process, the operator, the system user."""
    return [*permissions.processes(scope), credentials.ADMIN, credentials.SYSTEM]


def fingerprint(found: Mapping[str, Credential]) -> str:
    keys = "\n".join(f"{name} {c.public_key}" for name, c in sorted(found.items()))
    return hashlib.sha256(keys.encode()).hexdigest()


def write_config(
    data_dir: Path,
    *,
    port: int,
    monitor_port: int | None = None,
    scope: Scope = DEFAULT_SCOPE,
    previous: Mapping[str, Credential] | None = None,
    found: Mapping[str, Credential] | None = None,
    node: natsconf.ClusterNode | None = None,
    index: int = 1,
    extra: Iterable[str] = (),
) -> tuple[Path, dict[str, Credential]]:
    """Make sure the credentials exist (`extra`: replicas' `<process>@<n>`), write the server
    config naming them; (its path, the credentials). A cluster's node `index` has its own
    config and store (`config_path`, `store_dir`)."""
    found = (
        dict(found)
        if found is not None
        else credentials.ensure(data_dir, [*standard_names(scope), *extra])
    )
    text = natsconf.server_config(
        found, host="127.0.0.1", port=port, store_dir=store_dir(data_dir, index if node else None),
        monitor_port=monitor_port, scope=scope, previous=previous, node=node,
    )  # fmt: skip
    path = config_path(data_dir, index if node else None)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    credentials.write_private(path, text.encode())
    return path, found


def config_path(data_dir: Path, index: int | None) -> Path:
    """`nats/nats.conf` for a lone server, `nats/node-<n>.conf` for node n of a cluster."""
    return data_dir / (CONFIG if index is None else CONFIG.with_name(f"node-{index}.conf"))


def store_dir(data_dir: Path, index: int | None) -> Path:
    """`jetstream/` for a lone server, `jetstream-cluster/node-<n>/` for node n (separate
    stores: losing one node's disk is what a cluster survives)."""
    return data_dir / ("jetstream" if index is None else f"jetstream-cluster/node-{index}")


def node_name(index: int) -> str:
    """A cluster node's `server_name` (what stream info names as leader and replicas)."""
    return f"agentops-{index}"


def applied(data_dir: Path) -> str | None:
    try:
        return (data_dir / APPLIED).read_text().strip()
    except OSError:
        return None


async def accepts(url: str, credential: Credential, timeout: float = ACCEPT_TIMEOUT_S) -> bool:
    """Does the server at `url` accept this credential (within `timeout`)?"""

    async def quiet(_: Exception) -> None:  # a refusal before the reload is expected
        return None

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            nc = await nats.connect(
                servers=nats_servers(url), nkeys_seed_str=credential.seed.decode(),
                allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0,
                name="agentops-supervisor", error_cb=quiet,
            )  # fmt: skip
        except Exception:  # not reloaded yet, or the server is restarting
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.1)
            continue
        await nc.close()
        return True


class EmbeddedNats:
    """The server (or the cluster of `nodes` servers on loopback) `agentops up` runs, with the
    configs it generated. Node 1 listens on `port`, the others on free ports chosen once (a
    restarted node comes back on its own); `servers[i]` is node i+1."""

    def __init__(
        self, data_dir: Path, port: int, log_dir: Path, monitor_port: int | None,
        scope: Scope = DEFAULT_SCOPE, *, nodes: int = 1, extra: Iterable[str] = (),
    ) -> None:  # fmt: skip
        self.data_dir = data_dir
        self.monitor_port = monitor_port
        self.scope = scope
        self.extra = tuple(extra)
        self.in_force: dict[str, Credential] = {}
        self.ports = [port, *(free_port() for _ in range(nodes - 1))]
        self.nodes: list[natsconf.ClusterNode | None] = [None]
        if nodes > 1:
            secret = credentials.route_secret(data_dir)
            routes = [free_port() for _ in range(nodes)]
            self.nodes = [
                natsconf.ClusterNode(
                    node_name(i + 1),
                    routes[i],
                    tuple(r for r in routes if r != routes[i]),
                    secret,
                )
                for i in range(nodes)
            ]
        configs, self.in_force = self._write()
        self.servers = [
            self._server(i, node, configs[i], log_dir) for i, node in enumerate(self.nodes)
        ]
        self.server = self.servers[0]

    def _server(
        self, i: int, node: natsconf.ClusterNode | None, config: Path, log_dir: Path
    ) -> NatsServer:
        return NatsServer(
            store_dir=store_dir(self.data_dir, i + 1 if node else None), port=self.ports[i],
            monitor_port=self.monitor_port if i == 0 else None, config=config,
            log_file=log_dir / ("nats.log" if node is None else f"nats-{i + 1}.log"),
        )  # fmt: skip

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (what children get as NATS_URL)."""
        return ",".join(server.url for server in self.servers)

    def _write(
        self,
        found: Mapping[str, Credential] | None = None,
        previous: Mapping[str, Credential] | None = None,
    ) -> tuple[list[Path], dict[str, Credential]]:
        configs: list[Path] = []
        keys: dict[str, Credential] = dict(found) if found is not None else {}
        for i, node in enumerate(self.nodes):
            config, keys = write_config(
                self.data_dir, port=self.ports[i], monitor_port=self.monitor_port if i == 0
                else None, scope=self.scope, previous=previous, found=keys or None, node=node,
                index=i + 1, extra=self.extra,
            )  # fmt: skip
            configs.append(config)
        if previous is None:
            (self.data_dir / APPLIED).write_text(fingerprint(keys) + "\n")
        return configs, keys

    async def _reload(self) -> None:
        for server in self.servers:
            await asyncio.to_thread(server.reload)

    async def apply(self, restart: Callable[[set[str]], Awaitable[None]]) -> set[str]:
        """Put the credentials now in the data dir in force (module docstring); the names
        whose key changed or appeared."""
        old = self.in_force
        new = credentials.ensure(self.data_dir, [*standard_names(self.scope), *self.extra])
        changed = {n for n, c in new.items() if n not in old or old[n].public_key != c.public_key}
        if not changed and set(old) == set(new):
            self._write(new)
            return set()
        self._write(new, previous=old)
        await self._reload()
        probe = new[sorted(changed)[0]] if changed else None
        if probe is not None and not await accepts(self.server.url, probe):
            log.error("nats.reload_not_in_force", config=str(self.data_dir / CONFIG))
        processes = permissions.processes(self.scope)
        await restart({n for n in changed if n.split(natsconf.REPLICA)[0] in processes})
        self._write(new)
        await self._reload()
        self.in_force = new
        log.info("nats.credentials_applied", changed=sorted(changed))
        return changed
