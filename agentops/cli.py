"""The `agentops` command: run the daemon (`up`, `run`) and talk to a running edge.

Invariants:
- Exit codes: 0 success, 1 the server answered with an error or could not be reached,
  2 bad configuration or usage. Configuration errors print `error: <message>` and no
  traceback.
- Client commands print the server's JSON, pretty, on stdout; errors go to stderr.
- The API token comes from AGENTOPS_API_TOKEN and is sent as a Bearer header, never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from agentops import __version__
from agentops.config import load_settings, validate_sections
from agentops.logging import configure_logging
from agentops.processes import select_processes, service_entry
from agentops.protocol import subjects
from agentops.protocol.errors import ConfigError
from agentops.runtime import DEFAULT, Supervisor

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientError(Exception):
    """The edge answered with an error, or could not be reached (exit code 1)."""


# ---- daemon commands ----


def _cmd_up(args: argparse.Namespace) -> int:
    settings = load_settings(
        host=args.host, port=args.port, nats_url=args.nats_url, data_dir=args.data_dir
    )
    validate_sections(settings)
    if settings.nats_url is None and not settings.jetstream_declare:
        raise ConfigError(
            "AGENTOPS_JETSTREAM_DECLARE=false would leave the embedded nats-server without "
            "streams: unset it, or pass --nats-url to a server whose streams exist"
        )
    without = [p.strip() for raw in args.without or () for p in raw.split(",") if p.strip()]
    processes = select_processes(without)
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
    validate_sections(load_settings())
    module = importlib.import_module(module_name)
    # The same argv as `python -m <module> ...`, so the service parses its options unchanged.
    sys.argv = [module_name, *argv]
    os.environ.setdefault("AGENTOPS_PROCESS", args.process)
    result = module.main()
    return result if isinstance(result, int) else 0


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"agentops {__version__}")
    return 0


# ---- client commands ----


def _request(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    headers = dict(kwargs.pop("headers", {}))
    token = os.environ.get("AGENTOPS_API_TOKEN", "").strip()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = args.url.rstrip("/") + path
    try:
        response = httpx.request(method, url, headers=headers, timeout=args.timeout, **kwargs)
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach AgentOps at {args.url}: {exc}") from None
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
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    return _request(args, "POST", "/tasks", json=body, headers=headers)


def _cmd_tasks(args: argparse.Namespace) -> Any:
    path = f"/tasks/{_id(args.task_id)}" if args.task_id else "/tasks"
    return _request(args, "GET", path)


def _cmd_agents(args: argparse.Namespace) -> Any:
    if args.agent_id:
        return _request(args, "GET", f"/agents/{_id(args.agent_id)}/status")
    return _request(args, "GET", "/agents")


def _cmd_respond(args: argparse.Namespace) -> Any:
    try:
        response: Any = json.loads(args.response)
    except ValueError:
        response = args.response  # plain text is a valid answer too
    body: dict[str, Any] = {"response": response}
    if args.request_id:
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
        "--nats-port", type=int, default=4222, help="embedded nats-server port (default 4222)"
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

    run = sub.add_parser("run", help="run one process in the foreground (for Procfile users)")
    run.add_argument("process", choices=subjects.all_processes(), metavar="PROCESS")
    run.set_defaults(func=_cmd_run, client=False)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=_cmd_version, client=False)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("AGENTOPS_URL", DEFAULT_URL),
        help=f"edge URL (AGENTOPS_URL, default {DEFAULT_URL})",
    )
    common.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")

    def client(name: str, func: Callable[[argparse.Namespace], Any], summary: str) -> Any:
        p = sub.add_parser(name, parents=[common], help=summary)
        p.set_defaults(func=func, client=True)
        return p

    submit = client("submit", _cmd_submit, "submit a task to an agent type")
    submit.add_argument("agent_type", metavar="AGENT_TYPE")
    submit.add_argument("description", metavar="DESCRIPTION")
    submit.add_argument("--context", help="JSON object with extra context for the agent")
    submit.add_argument("--max-steps", type=int)
    submit.add_argument(
        "--idempotency-key", help="retrying with the same key returns the same task"
    )
    client("tasks", _cmd_tasks, "list tasks, or show one").add_argument(
        "task_id", nargs="?", metavar="TASK_ID"
    )
    client("agents", _cmd_agents, "list agents, or show one agent's status").add_argument(
        "agent_id", nargs="?", metavar="AGENT_ID"
    )
    respond = client("respond", _cmd_respond, "answer an agent that asked for human input")
    respond.add_argument("agent_id", metavar="AGENT_ID")
    respond.add_argument("response", metavar="RESPONSE", help="JSON, or plain text")
    respond.add_argument("--request-id")
    client("pause", _cmd_pause, "pause an agent").add_argument("agent_id", metavar="AGENT_ID")
    client("resume", _cmd_resume, "resume a paused agent").add_argument(
        "agent_id", metavar="AGENT_ID"
    )
    client("cancel", _cmd_cancel, "cancel a task").add_argument("task_id", metavar="TASK_ID")
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
