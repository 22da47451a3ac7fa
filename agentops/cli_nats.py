"""`agentops init` and `agentops rotate-credentials`: the NATS credentials of a data dir.

- `init` writes what `agentops up` would generate, for Procfile and systemd users: a
  credential per process (`<data-dir>/credentials/<process>.nk`, 0600) and the server config
  (`<data-dir>/nats/nats.conf`), which the Procfile's `nats-server -c` line reads; `agentops
  run <process>` then finds its credential in the same data dir. `--plugin NAME` adds a
  plugin's credential, `--hub-users FILE` writes the hybrid hub's users file, and
  `--hybrid-files DIR` the checked-in gateway permissions (deploy/hybrid). `--replicas N`
  adds a credential per replica (`P@2` .. `P@N`, each P's rights), and `--cluster-nodes N
  --cluster-out DIR` the configs of an N-node cluster for compose or machines of their own
  (`natsconf.cluster_node_config`: node-<i>.conf, the users, the secret routes file).
- `rotate-credentials` gives every credential a new seed. With `agentops up` running on the
  data dir it is told (SIGHUP) and puts them in force itself (`embedded.py`): this command
  returns once it has. Otherwise it rewrites the config and says what to reload.
Existing credentials are kept by `init`; nothing here prints a seed.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import time
from pathlib import Path

from agentops import credentials, embedded, natsconf, pidfile
from agentops.agents.loader import agent_types
from agentops.cli_args import port
from agentops.config import Settings, load_nats, load_settings, validate_sections
from agentops.protocol import permissions, subjects
from agentops.protocol.errors import ConfigError
from agentops.protocol.permissions import Scope

APPLY_TIMEOUT_S = 120.0
_LISTEN = re.compile(r'^listen: "[^"]*:(\d+)"', re.MULTILINE)


def add_nats_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = sub.add_parser(
        "init",
        help="write the nats-server config and a credential per process (Procfile, systemd)",
    )
    init.add_argument("--data-dir", help="where they go (default ./.agentops)")
    init.add_argument("--nats-port", type=port, default=None, help="nats-server port (4222)")
    init.add_argument(
        "--plugin", action="append", default=[], metavar="NAME",
        help="also a credential for the plugin tool NAME (repeatable)",
    )  # fmt: skip
    init.add_argument("--hub-users", metavar="FILE", help="hybrid: write the hub's users file")
    init.add_argument("--hybrid-files", metavar="DIR", help=argparse.SUPPRESS)
    init.add_argument(
        "--cluster-nodes", type=_count, metavar="N",
        help="with --cluster-out: write the configs of an N-node NATS cluster (compose, systemd)",
    )  # fmt: skip
    init.add_argument("--cluster-out", metavar="DIR", help="where the cluster's configs go")
    init.add_argument(
        "--cluster-hosts", metavar="H1,H2,...",
        help="the nodes' host names, which routes dial (default nats-1,...,nats-N)",
    )  # fmt: skip
    init.add_argument(
        "--cluster-store-dir", default="/data/jetstream", metavar="PATH",
        help="each node's JetStream store (default /data/jetstream, the compose volume)",
    )  # fmt: skip
    init.add_argument(
        "--replicas", type=_count, default=1, metavar="N",
        help="a credential for N replicas of every process: P, P@2, ... P@N (default 1)",
    )  # fmt: skip
    init.set_defaults(func=cmd_init, client=False)
    rotate = sub.add_parser(
        "rotate-credentials", help="new NATS credentials for every process, plugin and operator"
    )
    rotate.add_argument("--data-dir", help="the data dir (default ./.agentops)")
    rotate.set_defaults(func=cmd_rotate, client=False)


def _settings(data_dir: str | None) -> Settings:
    settings = load_settings(data_dir=data_dir)
    validate_sections(settings)
    return settings


def _port(settings: Settings, given: int | None) -> int:
    """The port given, else the one the data dir's config has, else 4222."""
    if given is not None:
        return given
    try:
        found = _LISTEN.search((settings.data_dir / embedded.CONFIG).read_text())
    except OSError:
        found = None
    return int(found.group(1)) if found else 4222


def cmd_init(args: argparse.Namespace) -> int:
    settings = _settings(args.data_dir)
    data_dir = settings.data_dir
    scope = Scope(agent_types=agent_types(settings))
    names = embedded.standard_names(scope)
    names += natsconf.replica_names(permissions.processes(scope), args.replicas)
    for tool in args.plugin:
        try:
            names.append(subjects.plugin_process(tool))
        except subjects.InvalidName:
            raise ConfigError(f"--plugin {tool!r}: a plugin tool name is [a-z0-9_]") from None
    found = credentials.ensure(data_dir, names)
    nats_port = _port(settings, args.nats_port)
    config, _ = embedded.write_config(
        data_dir, port=nats_port, monitor_port=load_nats(settings).monitor_port, found=found,
        scope=scope,
    )  # fmt: skip
    print(f"credentials  {credentials.directory(data_dir)}/ ({len(found)}, mode 0600)")
    print(f"nats config  {config}")
    if args.hub_users:
        _write_public(Path(args.hub_users), natsconf.hub_users(found, scope))
        print(f"hub users    {args.hub_users}")
    if args.hybrid_files:
        target = Path(args.hybrid_files) / "gateway-permissions.conf"
        _write_public(target, natsconf.gateway_permissions_file())
        print(f"gateway      {target}")
    if args.cluster_nodes is not None or args.cluster_out is not None:
        out = _write_cluster(args, found, scope)
        print(f"cluster      {out}/ ({args.cluster_nodes} nodes; {natsconf.ROUTES_FILE} is secret)")
    for tool in args.plugin:
        seed = credentials.seed_path(data_dir, subjects.plugin_process(tool))
        print(f"plugin {tool}: run it with AGENTOPS_DATA_DIR={data_dir} (or NATS_NKEY_SEED={seed})")
    if _tell_supervisor(data_dir, found):
        print("agentops up (running on this data dir) has put them in force")
    elif args.cluster_out:
        node = Path(args.cluster_out) / natsconf.deploy_node_file(1)
        print(f"start each node with: nats-server -c {node} (node-2.conf, ... on the others)")
    else:
        print(f"start NATS with: nats-server -c {config}   (the Procfile's `nats` line)")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    settings = _settings(args.data_dir)
    data_dir = settings.data_dir
    if not credentials.existing(data_dir):
        raise ConfigError(
            f"no credentials in {credentials.directory(data_dir)}: run `agentops init` or "
            "`agentops up` first"
        )
    nats_port = _port(settings, None)
    found = credentials.rotate(data_dir)
    plugins = credentials.plugin_names(found)
    print(f"new seeds for {len(found)} credentials in {credentials.directory(data_dir)}/")
    if _tell_supervisor(data_dir, found):
        print("agentops up has put them in force and restarted its processes")
    else:
        embedded.write_config(
            data_dir, port=nats_port, monitor_port=load_nats(settings).monitor_port, found=found,
            scope=Scope(agent_types=agent_types(settings)),
        )  # fmt: skip
        print(
            "no `agentops up` runs on this data dir: reload nats-server (`nats-server "
            "--signal reload` or kill -HUP its pid), then restart every AgentOps process"
        )
    if plugins:
        print(f"restart the plugin processes ({', '.join(plugins)}): their old keys are gone")
    return 0


def _tell_supervisor(data_dir: Path, found: dict[str, credentials.Credential]) -> bool:
    """Ask a running `agentops up` to apply the credentials; True once it has."""
    pid = pidfile.running(data_dir)
    if pid is None:
        return False
    wanted = embedded.fingerprint(found)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + APPLY_TIMEOUT_S
    while embedded.applied(data_dir) != wanted:
        if time.monotonic() > deadline or pidfile.running(data_dir) != pid:
            raise ConfigError(
                f"agentops up (pid {pid}) did not apply the new credentials within "
                f"{APPLY_TIMEOUT_S:.0f}s: see {data_dir / 'logs'}"
            )
        time.sleep(0.2)  # polling another process's progress
    return True


def _count(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 64:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a count from 1 to 64")
    return int(raw)


_ROUTE_PASSWORD = re.compile(r'password: "([0-9a-f]{32,})"')


def _write_cluster(
    args: argparse.Namespace, found: dict[str, credentials.Credential], scope: Scope
) -> Path:
    """The configs of a deployment's cluster (natsconf: node-<i>.conf, the users, the routes);
    the route password is kept from an earlier run into the same directory."""
    if args.cluster_nodes is None or args.cluster_out is None:
        raise ConfigError("--cluster-nodes and --cluster-out go together")
    nodes = args.cluster_nodes
    hosts = [h.strip() for h in (args.cluster_hosts or "").split(",") if h.strip()]
    hosts = hosts or [f"nats-{i}" for i in range(1, nodes + 1)]
    if len(hosts) != nodes or len(set(hosts)) != nodes:
        raise ConfigError(f"--cluster-hosts: give {nodes} different host names")
    out = Path(args.cluster_out)
    out.mkdir(parents=True, exist_ok=True)
    routes = out / natsconf.ROUTES_FILE
    try:
        kept = _ROUTE_PASSWORD.search(routes.read_text())
    except OSError:
        kept = None
    secret = kept.group(1) if kept else secrets.token_hex(24)  # hex: safe in a route URL
    credentials.write_private(routes, natsconf.cluster_routes(secret, hosts).encode())
    _write_public(out / natsconf.AUTH_FILE, natsconf.auth_config(found, scope))
    for i, host in enumerate(hosts, 1):
        text = natsconf.cluster_node_config(host, store_dir=args.cluster_store_dir)
        _write_public(out / natsconf.deploy_node_file(i), text)
    return out


def _write_public(path: Path, text: str) -> None:
    """Files of public keys and permissions (no secret): readable, written atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
