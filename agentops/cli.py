"""The `agentops` command: run the daemon (`up`, `run`) and talk to a running edge.

Invariants:
- Exit codes: 0 success, 1 the request failed (the server answered with an error, could
  not be reached, did not answer in time, or broke HTTP), 2 bad configuration or usage.
  Errors print one `error: <message>` line (argparse's usage errors its usage first) and
  no traceback.
- Client commands print the server's JSON, pretty, on stdout; errors go to stderr.
- The API token comes from AGENTOPS_API_TOKEN and is sent as a Bearer header, never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib
import json
import math
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from agentops import __version__, streams
from agentops.config import load_settings, validate_sections
from agentops.logging import configure_logging
from agentops.processes import select_processes, service_entry
from agentops.protocol import subjects
from agentops.protocol.errors import ConfigError
from agentops.runtime import DEFAULT, Supervisor

DEFAULT_URL = "http://127.0.0.1:8000"
_N = TypeVar("_N", int, float)
# errno values of a listening socket that cannot bind: the address is taken, not local, or
# a privileged port.
_BIND_ERRORS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


class ClientError(Exception):
    """The request failed: the edge answered with an error, could not be reached, did not
    answer in time or sent something that is not HTTP (exit code 1)."""


# ---- daemon commands ----


def _cmd_up(args: argparse.Namespace) -> int:
    settings = load_settings(
        host=args.host, port=args.port, nats_url=args.nats_url, data_dir=args.data_dir
    )
    validate_sections(settings)
    if settings.nats_url is None and settings.port == args.nats_port:
        raise ConfigError(
            f"the edge port and --nats-port are both {settings.port}: the embedded nats-server "
            "and the edge cannot share a port; pass a different --port or --nats-port"
        )
    if settings.nats_url is None and not settings.jetstream_declare:
        raise ConfigError(
            "AGENTOPS_JETSTREAM_DECLARE=false would leave the embedded nats-server without "
            "streams: unset it, or pass --nats-url to a server whose streams exist"
        )
    without = [p.strip() for raw in args.without or () for p in raw.split(",") if p.strip()]
    processes = select_processes(without)
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
        elsewhere=[p for p in subjects.all_processes() if p not in processes],
    )
    return _run_async(supervisor.run)


def _run_async(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main())
    return uvloop.run(main())


def _cmd_run(args: argparse.Namespace) -> int:
    module_name, argv = service_entry(args.process)
    # Fail here, with a clean message, before the service starts.
    settings = load_settings()
    validate_sections(settings)
    module = importlib.import_module(module_name)
    # The same argv as `python -m <module> ...`, so the service parses its options unchanged.
    sys.argv = [module_name, *argv]
    os.environ.setdefault("AGENTOPS_PROCESS", args.process)
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


# ---- client commands ----


def _check_header_value(value: str, what: str, *, secret: bool = False) -> None:
    """HTTP header values are sent as ASCII: only printable ASCII (space to `~`) is allowed,
    no other characters, no control characters such as a newline. A secret's characters are
    not printed."""
    for position, char in enumerate(value, 1):
        if not " " <= char <= "~":
            found = f"character {position}" if secret else f"the character {char!r}"
            raise ConfigError(
                f"{what} has {found}, which is not printable ASCII: an HTTP header value may "
                "only contain printable ASCII characters (space to '~')"
            )


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"the edge URL {url!r} (--url, AGENTOPS_URL) is invalid: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"the edge URL {url!r} (--url, AGENTOPS_URL) is not an http:// or https:// URL "
            "with a host, e.g. http://127.0.0.1:8000"
        )


def _send(args: argparse.Namespace, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request; each httpx failure is named for what it is, not all as unreachable."""
    where = f"AgentOps at {args.url}"
    try:
        return httpx.request(method, url, timeout=args.timeout, **kwargs)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise ClientError(f"cannot reach {where}: {str(exc) or type(exc).__name__}") from None
    except httpx.TimeoutException:
        raise ClientError(f"{where} did not answer within {args.timeout:g} s (--timeout)") from None
    except httpx.RemoteProtocolError as exc:
        raise ClientError(f"{where} sent an invalid HTTP response: {exc}") from None
    except httpx.LocalProtocolError as exc:
        raise ConfigError(f"cannot send the request to {where}: {exc}") from None
    except httpx.NetworkError as exc:
        raise ClientError(f"the connection to {where} failed: {exc}") from None
    except httpx.HTTPError as exc:
        raise ClientError(f"the request to {where} failed: {exc}") from None


def _request(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    headers = dict(kwargs.pop("headers", {}))
    for name, value in headers.items():
        _check_header_value(value, f"the {name} header")
    token = os.environ.get("AGENTOPS_API_TOKEN", "").strip()
    if token:
        _check_header_value(token, "AGENTOPS_API_TOKEN", secret=True)
        headers["Authorization"] = f"Bearer {token}"
    _check_url(args.url)
    response = _send(args, method, args.url.rstrip("/") + path, headers=headers, **kwargs)
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    if response.status_code >= 400:
        raise ClientError(_error_message(response.status_code, body))
    return body


def _error_message(status: int, body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        text = f"{error.get('code', 'error')}: {error.get('message', '')}"
        if error.get("details") is not None:
            text += f"\n{json.dumps(error['details'], indent=2)}"
        return f"HTTP {status} {text}"
    return f"HTTP {status} {body if isinstance(body, str) else json.dumps(body)}".rstrip()


def _nonempty(value: str) -> str:
    """An argparse type: an id or key given explicitly must not be empty (an unset shell
    variable, `agentops tasks "$TASK_ID"`, must not list every task instead)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def _number(
    convert: Callable[[str], _N], valid: Callable[[_N], bool], rule: str
) -> Callable[[str], _N]:
    """An argparse type: `convert` the value, and refuse it unless `valid` (`must be <rule>`)."""

    def parse(value: str) -> _N:
        try:
            number = convert(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
        if not valid(number):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value!r}")
        return number

    return parse


_positive = _number(float, lambda x: math.isfinite(x) and x > 0, "a finite number greater than 0")
_port = _number(int, lambda port: 1 <= port <= 65535, "between 1 and 65535")


def _id(value: str) -> str:
    return quote(value, safe="")


def _parse_json_arg(raw: str, what: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{what} is not valid JSON: {exc}") from None


def _cmd_submit(args: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"agent_type": args.agent_type, "description": args.description}
    if args.context is not None:
        body["context"] = _parse_json_arg(args.context, "--context")
    if args.max_steps is not None:
        body["max_steps"] = args.max_steps
    if args.budget_usd is not None:
        body["budget_usd"] = args.budget_usd
    headers = {} if args.idempotency_key is None else {"Idempotency-Key": args.idempotency_key}
    return _request(args, "POST", "/tasks", json=body, headers=headers)


def _cmd_tasks(args: argparse.Namespace) -> Any:
    path = "/tasks" if args.task_id is None else f"/tasks/{_id(args.task_id)}"
    return _request(args, "GET", path)


def _cmd_agents(args: argparse.Namespace) -> Any:
    if args.agent_id is not None:
        return _request(args, "GET", f"/agents/{_id(args.agent_id)}/status")
    return _request(args, "GET", "/agents")


def _cmd_respond(args: argparse.Namespace) -> Any:
    try:
        response: Any = json.loads(args.response)
    except ValueError:
        response = args.response  # plain text is a valid answer too
    body: dict[str, Any] = {"response": response}
    if args.request_id is not None:
        body["request_id"] = args.request_id
    return _request(args, "POST", f"/agents/{_id(args.agent_id)}/human-response", json=body)


def _cmd_pause(args: argparse.Namespace) -> Any:
    return _request(args, "POST", f"/agents/{_id(args.agent_id)}/pause")


def _cmd_resume(args: argparse.Namespace) -> Any:
    return _request(args, "POST", f"/agents/{_id(args.agent_id)}/resume")


def _cmd_cancel(args: argparse.Namespace) -> Any:
    return _request(args, "POST", f"/tasks/{_id(args.task_id)}/cancel")


def _cmd_health(args: argparse.Namespace) -> Any:
    return _request(args, "GET", "/health")


# ---- parser ----


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
        type=_port,
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
    up.set_defaults(func=_cmd_up, client=False)

    run = sub.add_parser(
        "run",
        help="run one process in the foreground (for Procfile users)",
        description="Run one AgentOps process in the foreground. PROCESS is one of:\n  "
        + "\n  ".join(subjects.all_processes()),
        formatter_class=argparse.RawDescriptionHelpFormatter,  # one process name a line
    )
    run.add_argument(
        "process", choices=subjects.all_processes(), metavar="PROCESS", help="listed above"
    )
    run.set_defaults(func=_cmd_run, client=False)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=_cmd_version, client=False)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        # An empty variable counts as unset, as in agentops.config.
        default=os.environ.get("AGENTOPS_URL", "").strip() or DEFAULT_URL,
        help=f"edge URL (AGENTOPS_URL, default {DEFAULT_URL})",
    )
    common.add_argument(
        "--timeout", type=_positive, default=30.0, help="seconds, greater than 0 (default 30)"
    )

    def client(name: str, func: Callable[[argparse.Namespace], Any], summary: str) -> Any:
        p = sub.add_parser(name, parents=[common], help=summary)
        p.set_defaults(func=func, client=True)
        return p

    submit = client("submit", _cmd_submit, "submit a task to an agent type")
    submit.add_argument("agent_type", type=_nonempty, metavar="AGENT_TYPE")
    submit.add_argument("description", metavar="DESCRIPTION")
    submit.add_argument("--context", help="JSON object with extra context for the agent")
    submit.add_argument("--max-steps", type=int)
    submit.add_argument(
        "--budget-usd", type=_positive, help="cap on what the task may spend on LLM calls, in USD"
    )
    submit.add_argument(
        "--idempotency-key",
        type=_nonempty,
        help="retrying with the same key returns the same task (printable ASCII)",
    )
    client("tasks", _cmd_tasks, "list tasks, or show one").add_argument(
        "task_id", nargs="?", type=_nonempty, metavar="TASK_ID"
    )
    client("agents", _cmd_agents, "list agents, or show one agent's status").add_argument(
        "agent_id", nargs="?", type=_nonempty, metavar="AGENT_ID"
    )
    respond = client("respond", _cmd_respond, "answer an agent that asked for human input")
    respond.add_argument("agent_id", type=_nonempty, metavar="AGENT_ID")
    respond.add_argument("response", metavar="RESPONSE", help="JSON, or plain text")
    respond.add_argument("--request-id", type=_nonempty)
    client("pause", _cmd_pause, "pause an agent").add_argument(
        "agent_id", type=_nonempty, metavar="AGENT_ID"
    )
    client("resume", _cmd_resume, "resume a paused agent").add_argument(
        "agent_id", type=_nonempty, metavar="AGENT_ID"
    )
    client("cancel", _cmd_cancel, "cancel a task").add_argument(
        "task_id", type=_nonempty, metavar="TASK_ID"
    )
    client("health", _cmd_health, "show the edge's health")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.client:
            print(json.dumps(args.func(args), indent=2))
            return 0
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the supervisor's own handler is installed
        return 130


if __name__ == "__main__":
    sys.exit(main())
