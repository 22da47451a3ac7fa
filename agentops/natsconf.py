"""nats-server configuration AgentOps generates: users, their permissions, the server itself.

One generator for every place a NATS user is declared: the embedded server of `agentops up`
and `agentops init` (`server_config`), the hybrid hub's local users (`hub_users`) and the
remote LLM gateway's permission list (`gateway_permissions`, checked in as
deploy/hybrid/gateway-permissions.conf; a test compares the file with this output). A
cluster config is assembled from the same pieces: `principals` gives each replica
(`<process>@<n>`) its process's rights, `users_list` renders them, and the routes' own
credentials go beside them in the `cluster {}` block (`ClusterNode`).

Rules:
- A user is an nkey public key (or a password taken from an environment variable) with the
  `Permissions` of `protocol/permissions.py`; `None` permissions (the operator's `admin`)
  means every subject. Strings are JSON-quoted, so `$JS.API...` is never read as a variable.
- A cluster node's config is the single server's plus its `server_name` and `cluster {}`
  block; every node names the same users.
- The embedded server's users live in the global account (where JetStream kept its streams
  before authentication existed, so an old data dir keeps them); the system account has the
  `system` user only. No user, no connection: there is no anonymous access.
- The server tuning (payload size, JetStream limits) comes from the shipped `nats.conf`, so
  there is one place for it; the listen address, store dir and monitoring are set here. The
  monitoring port is off unless `[nats] monitor_port` asks for it, and then on loopback.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from agentops import credentials as creds
from agentops.credentials import Credential
from agentops.natsserver import NATS_CONF
from agentops.protocol import permissions as perms
from agentops.protocol.permissions import DEFAULT_SCOPE, Permissions, Scope

# A replica's own credential is `<process>@<n>` (e.g. `agent-backend_developer@2`): the same
# rights, a key of its own, so one replica can be cut off without the others.
REPLICA: Final = "@"
SYSTEM_ACCOUNT: Final = "SYS"
HUB_ACCOUNT: Final = "AGENTOPS"
GATEWAY_USER: Final = "gateway"
GATEWAY_PASSWORD_VAR: Final = "GATEWAY_NATS_PASSWORD"
GATEWAY_PERMISSIONS_VAR: Final = "GATEWAY_PERMISSIONS"
HUB_USERS_VAR: Final = "AGENTOPS_USERS"
HUB_DOMAIN: Final = "hub"


@dataclass(frozen=True)
class User:
    """One NATS user: an nkey (or a password from an environment variable)."""

    name: str  # shown in a comment; the process, plugin or role it is for
    nkey: str | None = None
    password_var: str | None = None
    permissions: Permissions | str | None = None  # a variable name (`$X`) or None: everything
    leaf_only: bool = False


def q(value: str) -> str:
    return json.dumps(value)


def permissions_block(p: Permissions, indent: str = "") -> str:
    def allow(subjects: tuple[str, ...]) -> str:
        return "\n".join(f"{indent}      {q(x)}" for x in subjects)

    lines = [
        "{",
        f"{indent}  publish: {{",
        f"{indent}    allow: [",
        allow(p.publish),
        f"{indent}    ]",
        f"{indent}  }}",
        f"{indent}  subscribe: {{",
        f"{indent}    allow: [",
        allow(p.subscribe),
        f"{indent}    ]",
        f"{indent}  }}",
    ]
    if p.responses_s is not None:
        expiry = q(f"{p.responses_s}s")
        lines.append(f"{indent}  allow_responses: {{ max: 1, expires: {expiry} }}")
    lines.append(f"{indent}}}")
    return "\n".join(lines)


def user_entry(user: User, indent: str) -> str:
    if user.nkey is not None:
        head = f"nkey: {user.nkey}"
    else:
        assert user.password_var is not None
        head = f"user: {user.name}, password: ${user.password_var}"
    parts = [f"{indent}# {user.name}", f"{indent}{{", f"{indent}  {head}"]
    if isinstance(user.permissions, str):
        parts.append(f"{indent}  permissions: {user.permissions}")
    elif user.permissions is not None:
        parts.append(f"{indent}  permissions: {permissions_block(user.permissions, indent + '  ')}")
    if user.leaf_only:
        parts.append(f'{indent}  allowed_connection_types: ["LEAFNODE"]')
    parts.append(f"{indent}}}")
    return "\n".join(parts)


def users_list(users: Iterable[User], indent: str = "    ") -> str:
    body = "\n".join(user_entry(u, indent + "  ") for u in users)
    return f"[\n{body}\n{indent}]"


def principals(
    found: Mapping[str, Credential],
    scope: Scope = DEFAULT_SCOPE,
    previous: Mapping[str, Credential] | None = None,
) -> tuple[list[User], list[User]]:
    """(users of the AgentOps account, users of the system account) for these credentials:
    each process and plugin its permissions, `admin` everything, `system` the system account.
    A credential of no known process is left out: it authenticates nothing. A `previous`
    key of a name (a rotation in progress) is a second user with the same rights."""
    known = {p: perms.for_process(p, scope) for p in perms.processes(scope)}
    for tool in creds.plugin_names(found):
        known[f"{creds.PLUGIN_PREFIX}{tool}"] = perms.for_plugin(tool)
    keys = [(name, c.public_key) for name, c in sorted(found.items())]
    for name, old in sorted((previous or {}).items()):
        if name in found and found[name].public_key != old.public_key:
            keys.append((f"{name} (previous key, until the rotation completes)", old.public_key))
    users: list[User] = []
    system: list[User] = []
    for label, key in keys:
        name = label.split(" ")[0].split(REPLICA, 1)[0]  # a replica has its process's rights
        if name == creds.ADMIN:
            users.append(User(label, nkey=key))
        elif name == creds.SYSTEM:
            system.append(User(label, nkey=key))
        elif name in known:
            users.append(User(label, nkey=key, permissions=known[name]))
    return users, system


def base_settings() -> str:
    """The shipped nats.conf without its listen address (set by the caller)."""
    kept = [
        line
        for line in NATS_CONF.read_text().splitlines()
        if not line.lstrip().startswith(("host:", "port:", "#"))
    ]
    return "\n".join(kept).strip()


@dataclass(frozen=True)
class ClusterNode:
    """One node of an embedded cluster (`agentops up --nats-cluster N`): its server name, its
    route port and the other nodes' route ports, all on loopback. Routes authenticate with
    one route user whose password is the cluster's secret (`credentials.route_secret`):
    nats-server allows a single user in a cluster's `authorization`, and no nkeys there."""

    name: str
    route_port: int
    peers: tuple[int, ...]
    secret: str = field(repr=False)

    def block(self) -> str:
        auth = f"user: {q(ROUTE_USER)}, password: {q(self.secret)}"
        routes = ",\n".join(
            f"    {q(f'nats-route://{ROUTE_USER}:{self.secret}@127.0.0.1:{p}')}" for p in self.peers
        )
        return f"""cluster {{
  name: {q(CLUSTER_NAME)}
  listen: {q(f"127.0.0.1:{self.route_port}")}
  authorization {{ {auth} }}
  routes: [
{routes}
  ]
}}"""


CLUSTER_NAME: Final = "agentops"
ROUTE_USER: Final = "route"


def server_config(
    found: Mapping[str, Credential],
    *,
    host: str,
    port: int,
    store_dir: Path,
    monitor_port: int | None = None,
    scope: Scope = DEFAULT_SCOPE,
    previous: Mapping[str, Credential] | None = None,
    node: ClusterNode | None = None,
) -> str:
    """The embedded nats-server's whole config: listen, JetStream, monitoring, users (and,
    for a node of a cluster, its name and routes)."""
    users, system = principals(found, scope, previous)
    store = f"jetstream {{\n  store_dir: {q(str(store_dir))}"
    base = base_settings().replace("jetstream {", store, 1)
    if node is not None:
        base = base.replace("server_name: agentops", f"server_name: {q(node.name)}", 1)
        base = (
            f"{base}\n\n# Routes to the other nodes, on loopback; the password is the cluster's\n"
            f"# route secret (this file is 0600).\n{node.block()}"
        )
    monitor = (
        f"http: {q(f'127.0.0.1:{monitor_port}')}  # monitoring, on loopback only"
        if monitor_port
        else "# monitoring: off ([nats] monitor_port in the config file turns it on, on loopback)"
    )
    return f"""# nats-server config generated by AgentOps (`agentops up`, `agentops init`): it is
# rewritten from the credentials in {creds.DIRECTORY}/ and the permissions of
# agentops/protocol/permissions.py, so do not edit it. It holds public keys only (and, on a
# node of a cluster, the route secret).
# Inspect with the operator credential:
#   nats --server nats://{host}:{port} --nkey <data-dir>/{creds.DIRECTORY}/{creds.ADMIN}{creds.SUFFIX} stream ls

listen: {q(f"{host}:{port}")}
{monitor}
{base}

# Every AgentOps process, plugin and the operator: one nkey user each, in the global account
# (JetStream's streams live there). Nothing connects without one of these keys.
authorization {{
  users: {users_list(users, "  ")}
}}

accounts {{
  {SYSTEM_ACCOUNT} {{
    users: {users_list(system, "    ")}
  }}
}}
system_account: {SYSTEM_ACCOUNT}
"""


GATEWAY_HEADER: Final = """# What the remote LLM gateway may do on NATS, and nothing more. Included by hub.conf (enforced
# on the leaf node connection: the boundary a compromised GPU machine cannot move) and by
# leaf.conf (enforced on the gateway process's own connection, so a violation fails loudly there).
#
# GENERATED by `agentops init --hybrid-files deploy/hybrid` from agentops/protocol/
# permissions.py (the same generator as the embedded server's users; a test checks that this
# file is its output): edit that module, not this file. JetStream is reached through the
# hub's domain `hub` ($JS.hub.API.* maps to the hub's $JS.API.*):
# - wait for the streams the hub declared (stream info, no create/update/delete);
# - create/bind (or replace) its durable push consumer `llm-gateway`, whose filter is pinned in
#   the subject (JetStream pushes its messages to `_INBOX.agentops-llm-gateway.deliver.llm-gateway`),
#   and ack/nak/term/in-progress them; its stall watchdog asks for the consumer's info and
#   kicks it on `<deliver subject>.kick`, under the same inbox prefix;
# - publish answers to agent mailboxes (their `llm` kind only) and llm events, and dead
#   letters of LLM requests;
# - answer $SRV.PING/INFO/STATS and its own control endpoint; replies go to requesters' inboxes;
# - receive replies only on its own inbox prefix `_INBOX.agentops-llm-gateway.`.
# Everything else is denied: submitting or cancelling tasks, human answers or tool results in
# a mailbox, tool calls, reading or writing any KV bucket (agent states, tasks, tool calls),
# other consumers, stream management, other processes' replies and control endpoints.
"""


def gateway_permissions() -> Permissions:
    return perms.for_process("llm-gateway", Scope(domain=HUB_DOMAIN, leaf=True))


def gateway_permissions_file() -> str:
    """deploy/hybrid/gateway-permissions.conf."""
    block = permissions_block(gateway_permissions())
    return f"{GATEWAY_HEADER}\n{GATEWAY_PERMISSIONS_VAR} = {block}\n"


def hub_users(found: Mapping[str, Credential], scope: Scope = DEFAULT_SCOPE) -> str:
    """The hybrid hub's users file (`include`d by deploy/hybrid/hub.conf): each local process
    and the operator by nkey, the remote gateway's leaf node by password."""
    local = [u for u in principals(found, scope)[0] if u.name != "llm-gateway" or u.nkey is None]
    gateway = User(
        GATEWAY_USER,
        password_var=GATEWAY_PASSWORD_VAR,
        permissions=f"${GATEWAY_PERMISSIONS_VAR}",
        leaf_only=True,
    )
    return f"""# The hybrid hub's users, GENERATED by `agentops init --hub-users <this file>` from the
# credentials of its data dir: one nkey per local AgentOps process (each with only its own
# permissions, agentops/protocol/permissions.py) and the operator's `admin`; the remote LLM
# gateway's leaf node by password ($GATEWAY_NATS_PASSWORD), with $GATEWAY_PERMISSIONS. Public
# keys only: no secret here. Run `agentops init --hub-users` again after a rotation.

include ./gateway-permissions.conf   # defines ${GATEWAY_PERMISSIONS_VAR}

{HUB_USERS_VAR} = {users_list([*local, gateway], "")}
"""


# ---- a deployment's cluster (compose, systemd on several machines, the Helm chart) ----
# Made from the same pieces as the embedded server's config (`principals`, `users_list`,
# `base_settings`), so there is still one generator of NATS users.
# `agentops init --cluster-nodes N --cluster-out DIR` writes, from the same principals:
# DIR/node-<i>.conf per node, DIR/agentops-auth.conf (every user, public keys only: also what
# the NATS Helm chart includes) and DIR/cluster-routes.conf (the route user's password and the
# route URLs: the one secret, 0600). Each node's config includes the other two.
AUTH_FILE: Final = "agentops-auth.conf"
ROUTES_FILE: Final = "cluster-routes.conf"
DEPLOY_CLIENT_PORT: Final = 4222
DEPLOY_ROUTE_PORT: Final = 6222
DEPLOY_MONITOR_PORT: Final = 8222


def deploy_node_file(index: int) -> str:
    return f"node-{index}.conf"


def replica_names(processes: Iterable[str], replicas: int) -> list[str]:
    """The credentials of `replicas` replicas of each process: the first is the process's own
    name, the n-th `<process>@<n>` (the names `agentops up --scale` gives its replicas)."""
    return [p if n == 1 else f"{p}{REPLICA}{n}" for p in processes for n in range(1, replicas + 1)]


def auth_config(found: Mapping[str, Credential], scope: Scope = DEFAULT_SCOPE) -> str:
    """agentops-auth.conf: every process, replica, plugin and the operator by nkey with its
    permissions (the global account), `system` in the system account. Public keys only."""
    users, system = principals(found, scope)
    return f"""# The users of an AgentOps NATS cluster, GENERATED by `agentops init --cluster-nodes N
# --cluster-out <dir>` from the credentials of its data dir and agentops/protocol/permissions.py:
# included by each node-<i>.conf and, on Kubernetes, by the NATS Helm chart's config. Public
# keys only. Run the command again after `agentops rotate-credentials` and reload every node.

authorization {{
  users: {users_list(users, "  ")}
}}
accounts {{
  {SYSTEM_ACCOUNT} {{ users: {users_list(system, "    ")} }}
}}
system_account: {SYSTEM_ACCOUNT}
"""


def cluster_routes(
    secret: str, hosts: Iterable[str], route_port: int = DEPLOY_ROUTE_PORT, user: str = "route"
) -> str:
    """cluster-routes.conf, included inside each node's `cluster {}`: the route user (nats-server
    allows one user and no nkeys for routes) and a route to every node (a node recognises the one to itself)."""
    routes = "\n".join(f"  {q(f'nats-route://{user}:{secret}@{h}:{route_port}')}" for h in hosts)
    return f"""# SECRET (mode 0600): the route password of an AgentOps NATS cluster, GENERATED by
# `agentops init --cluster-nodes N --cluster-out <dir>`; kept across runs.
authorization {{ user: {q(user)}, password: {q(secret)}, timeout: 2 }}
routes: [
{routes}
]
"""


def cluster_node_config(
    name: str,
    *,
    store_dir: str = "/data/jetstream",
    client_port: int = DEPLOY_CLIENT_PORT,
    route_port: int = DEPLOY_ROUTE_PORT,
    monitor_port: int = DEPLOY_MONITOR_PORT,
    cluster_name: str = "agentops",
) -> str:
    """node-<i>.conf: one node of a deployment's cluster. Clients and routes listen on every
    interface (a container's or a machine's network), monitoring on loopback only."""
    base = base_settings().replace("server_name: agentops", f"server_name: {q(name)}", 1)
    base = base.replace("jetstream {", f"jetstream {{\n  store_dir: {q(store_dir)}", 1)
    return f"""# nats-server config of the AgentOps cluster node {name}, GENERATED by `agentops init
# --cluster-nodes N --cluster-out <dir>`: do not edit. The users come from {AUTH_FILE}, the
# routes and their password from {ROUTES_FILE} (both beside this file).

listen: {q(f"0.0.0.0:{client_port}")}
http: {q(f"127.0.0.1:{monitor_port}")}  # monitoring, on loopback only (healthz for probes)
{base}

include ./{AUTH_FILE}

cluster {{
  name: {q(cluster_name)}
  listen: {q(f"0.0.0.0:{route_port}")}
  include ./{ROUTES_FILE}
}}
"""
