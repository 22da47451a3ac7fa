"""The `agentops` command: run the daemon (`up`, `run`) and talk to a running edge.

Invariants:
- Exit codes: 0 success, 1 the request failed (the server answered with an error, could
  not be reached, did not answer in time, or broke HTTP; `watch`: the task failed or was
  cancelled; `health`: degraded), 2 bad configuration or usage. Errors print one
  `error: <message>` line on stderr (argparse's usage errors its usage first) and no
  traceback.
- Client commands (`cli_args.py`, `cli_commands.py`, `cli_follow.py`) print tables for people
  or, with `-o json`, the edge's JSON; the token is sent as a Bearer header, never printed.
- A reader that goes away (`agentops tasks | head -1`, `logs -f | grep -m1 x`) ends a client
  command quietly with exit 0: Python ignores SIGPIPE, so it arrives as BrokenPipeError, and
  stdout is pointed at /dev/null so the interpreter's exit flush cannot fail again.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from agentops import __version__, streams
from agentops.agents.loader import SHIPPED_DIR, agent_types
from agentops.cli_args import add_client_commands, port
from agentops.cli_client import DEFAULT_URL, Client, ClientError
from agentops.cli_nats import add_nats_commands
from agentops.cli_output import make_console, print_json
from agentops.config import load_auth, load_settings, validate_sections
from agentops.config_tables import load_scale
from agentops.edge.auth import require_tokens_off_loopback
from agentops.logging import configure_logging
from agentops.processes import parse_scale, select_processes, service_entry, with_replicas
from agentops.protocol import subjects
from agentops.protocol.errors import ConfigError
from agentops.runtime import DEFAULT, Supervisor
from agentops.tools.policy import load_tool_settings

__all__ = ["DEFAULT_URL", "ClientError", "build_parser", "main"]

# errno values of a listening socket that cannot bind: the address is taken, not local, or
# a privileged port.
_BIND_ERRORS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


# ---- daemon commands ----


def _cmd_up(args: argparse.Namespace) -> int:
    settings = load_settings(
        host=args.host,
        port=args.port,
        nats_url=args.nats_url,
        data_dir=args.data_dir,
        agents_dir=args.agents_dir,
    )
    validate_sections(settings)
    types = agent_types(settings)
    if settings.nats_url is None and settings.port == args.nats_port:
        raise ConfigError(
            f"the edge port and --nats-port are both {settings.port}: the embedded nats-server "
            "and the edge cannot share a port; pass a different --port or --nats-port"
        )
    if settings.nats_url is None and settings.jetstream_declare is False:
        raise ConfigError(
            "AGENTOPS_JETSTREAM_DECLARE=false would leave the embedded nats-server without "
            "streams: unset it, or pass --nats-url to a server whose streams exist"
        )
    without = [p.strip() for raw in args.without or () for p in raw.split(",") if p.strip()]
    # [scale] of a process left to another machine (--without) is for that machine's `up`.
    configured = load_scale(settings.section("scale"), settings.config_source)
    scale = {name: n for name, n in configured.items() if name not in without}
    scale.update(parse_scale(args.scale or ()))  # the command line wins over [scale]
    processes = with_replicas(select_processes(types, without), scale, types)
    if args.nats_cluster > 1 and settings.nats_url is not None:
        raise ConfigError("--nats-cluster embeds a cluster: drop --nats-url (or NATS_URL)")
    tokens = load_auth(settings).tokens
    warnings = []
    if "edge" in processes:
        require_tokens_off_loopback(settings.host, settings.api_token, tokens)
        network = load_tool_settings(settings.section("tools"), settings.config_source).network
        if network and not settings.api_token and not tokens:
            warnings.append(
                f"code of {', '.join(network)} may use the network (loopback included) and "
                "the API has no token: set AGENTOPS_API_TOKEN so that code cannot use the API"
            )
    # Before logging captures them: a closed reader (`up | tee`, tee killed) must not break
    # the banner, the log lines or the stop.
    streams.guard_std_streams()
    configure_logging("supervisor", settings.log_level, settings.log_format)
    supervisor = Supervisor(
        settings,
        processes=processes,
        nats_port=args.nats_port,
        foreground_logs=args.foreground_logs,
        health_url=DEFAULT if "edge" in processes else None,
        elsewhere=[p for p in subjects.all_processes(types) if p not in processes],
        warnings=warnings,
        nats_cluster=args.nats_cluster,
    )
    return _run_async(supervisor.run)


def _run_async(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main())
    return uvloop.run(main())


def _cmd_run(args: argparse.Namespace) -> int:
    process = args.process
    if (process == "agent") != (args.agent_type is not None):
        raise ConfigError(
            "agentops run: give the agent type as `agentops run agent --type T` "
            "(or `agentops run agent-T`); --type goes with `agent` only"
        )
    if args.agent_type is not None:
        process = f"agent-{args.agent_type}"
    # Fail here, with a clean message, before the service starts.
    settings = load_settings(agents_dir=args.agents_dir)
    validate_sections(settings)
    module_name, argv = service_entry(process, agent_types(settings))
    if settings.agents_dir is not None:  # the service reads its settings again
        os.environ["AGENTOPS_AGENTS_DIR"] = str(settings.agents_dir)
    module = importlib.import_module(module_name)
    # The same argv as `python -m <module> ...`, so the service parses its options unchanged.
    sys.argv = [module_name, *argv]
    os.environ.setdefault("AGENTOPS_PROCESS", process)
    try:
        result = module.main()
    except OSError as exc:
        if exc.errno not in _BIND_ERRORS:
            raise
        # Only the edge listens; its address is the settings' host and port.
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        reason = os.strerror(exc.errno).lower()
        raise ConfigError(f"cannot listen on {host}:{settings.port}: {reason}") from None
    return result if isinstance(result, int) else 0


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"agentops {__version__}")
    return 0


# ---- parser ----
_AGENTS_DIR_HELP = (
    "directory of agent type files, <type>.toml each, added to the shipped types "
    "(AGENTOPS_AGENTS_DIR)"
)


def shipped_types() -> list[str]:
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.toml"))


def _cluster_size(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 7:
        raise argparse.ArgumentTypeError(f"must be a number of nodes from 1 to 7, got {raw!r}")
    return int(raw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentops", description="Run and control AgentOps, teams of AI developer agents."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start NATS and every AgentOps process, and supervise them")
    # Defaults are None so the environment (AGENTOPS_HOST, ...) applies when a flag is absent.
    up.add_argument("--host", help="edge bind address (AGENTOPS_HOST, default 127.0.0.1)")
    up.add_argument("--port", help="edge port (AGENTOPS_PORT, default 8000)")
    up.add_argument("--nats-url", help="use this NATS server or cluster instead of embedding one")
    up.add_argument(
        "--nats-port",
        type=port,
        default=4222,
        help="embedded nats-server port, 1-65535, not the edge's (default 4222)",
    )
    up.add_argument("--data-dir", help="state, logs and JetStream store (default ./.agentops)")
    up.add_argument(
        "--foreground-logs", action="store_true", help="children log to this terminal, not files"
    )
    up.add_argument(
        "--without",
        action="append",
        metavar="PROCESS",
        help="do not start PROCESS here (repeatable or comma-separated), e.g. llm-gateway when "
        "it runs on a GPU machine (AGENT_OPS_DEPLOY.md)",
    )
    up.add_argument("--agents-dir", help=_AGENTS_DIR_HELP)
    up.add_argument(
        "--nats-cluster",
        type=_cluster_size,
        default=1,
        metavar="N",
        help="embed N nats-servers on loopback as one JetStream cluster (R3 streams from 3)",
    )
    up.add_argument(
        "--scale",
        action="append",
        metavar="PROCESS=N",
        help="run N replicas of PROCESS, e.g. agent-backend_developer=3,tool-executor=2 "
        "(comma-separated or repeated; [scale] in the config file)",
    )
    up.set_defaults(func=_cmd_up, client=False)

    run = sub.add_parser(
        "run",
        help="run one process in the foreground (for Procfile users)",
        description="Run one AgentOps process in the foreground. PROCESS is one of:\n  "
        + "\n  ".join(subjects.CORE_PROCESSES)
        + "\n  agent-<type>, or `agent --type <type>`: the agents of one configured type"
        + f" (shipped: {', '.join(shipped_types())})",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # one process name a line
    )
    run.add_argument("process", metavar="PROCESS", help="listed above")
    run.add_argument(
        "--type", dest="agent_type", metavar="TYPE", help="with PROCESS `agent`: the agent type"
    )
    run.add_argument("--agents-dir", help=_AGENTS_DIR_HELP)
    run.set_defaults(func=_cmd_run, client=False)

    add_nats_commands(sub)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=_cmd_version, client=False)

    add_client_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.client:
            return _client_command(args)
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader is gone (`| head`): nothing left to say to it
        streams.silence(sys.stdout)
        return 0
    except KeyboardInterrupt:  # Ctrl-C before the supervisor's own handler is installed
        return 130


def _client_command(args: argparse.Namespace) -> int:
    client = Client(args)
    try:
        if args.stream:
            code: int = asyncio.run(args.func(args, client))
            return code
        if getattr(args, "raw", False):  # writes bytes itself (a diff, an archive)
            raw: int = args.func(args, client)
            return raw
        shown = args.func(args, client)
    finally:
        client.close()
    console = make_console()
    if args.output == "json":
        print_json(console, shown.body)
    else:
        shown.render(console, shown.body)
    sys.stdout.flush()  # a closed pipe shows here, inside main's handler, not at exit
    return int(shown.code)


if __name__ == "__main__":
    sys.exit(main())
