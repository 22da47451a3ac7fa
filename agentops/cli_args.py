"""The CLI's arguments: checked argument types, and the client commands' subparsers.

Rules:
- Every client command takes `--url` (AGENTOPS_URL), `--timeout`, `--token`
  (AGENTOPS_API_TOKEN) and `-o/--output table|json`.
- A value given explicitly must be usable: an empty id, a port out of range or a number that is
  not finite and positive is an argparse error (usage, exit 2) before anything is sent.
- A command sets `func(args, client)` and `client=True`; `stream=True` marks the commands
  that print as they go (`watch`, `logs`) instead of returning something to show.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from typing import Any, TypeVar, get_args

from agentops import cli_commands as commands
from agentops.cli_client import DEFAULT_URL, TOKEN_VARIABLE
from agentops.cli_code import add_code_commands
from agentops.cli_workflows import add_workflow_commands
from agentops.protocol.messages import AgentStatus, TaskStatus

_N = TypeVar("_N", int, float)


def nonempty(value: str) -> str:
    """An argparse type: an id or key given explicitly must not be empty (an unset shell
    variable, `agentops tasks "$TASK_ID"`, must not list every task instead)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def number(
    convert: Callable[[str], _N], valid: Callable[[_N], bool], rule: str
) -> Callable[[str], _N]:
    """An argparse type: `convert` the value, and refuse it unless `valid` (`must be <rule>`)."""

    def parse(value: str) -> _N:
        try:
            result = convert(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
        if not valid(result):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value!r}")
        return result

    return parse


positive = number(float, lambda x: math.isfinite(x) and x > 0, "a finite number greater than 0")
port = number(int, lambda p: 1 <= p <= 65535, "between 1 and 65535")
count = number(int, lambda n: n >= 1, "an integer of at least 1")
start = number(int, lambda n: n >= 0, "an integer of at least 0")


async def _watch(args: argparse.Namespace, client: Any) -> int:
    from agentops import cli_follow  # aiohttp's import costs a quarter second: only here

    return await cli_follow.watch(args, client)


async def _logs(args: argparse.Namespace, client: Any) -> int:
    from agentops import cli_follow

    return await cli_follow.logs(args, client)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        # An empty variable counts as unset, as in agentops.config.
        default=os.environ.get("AGENTOPS_URL", "").strip() or DEFAULT_URL,
        help=f"edge URL (AGENTOPS_URL, default {DEFAULT_URL})",
    )
    common.add_argument(
        "--timeout", type=positive, default=30.0, help="seconds, greater than 0 (default 30)"
    )
    common.add_argument(
        "--token",
        type=nonempty,
        help=f"API token, sent as a Bearer header (default: {TOKEN_VARIABLE})",
    )
    common.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="table for people (default), json for scripts",
    )
    return common


def add_client_commands(sub: Any) -> None:
    """The commands that talk to a running edge, on the `agentops` subparsers `sub`."""
    common = _common()

    def client(name: str, func: Any, summary: str, **extra: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=summary, **extra)
        p.set_defaults(func=func, client=True, stream=False)
        return p

    def task_id(p: argparse.ArgumentParser, **extra: Any) -> None:
        p.add_argument("task_id", type=nonempty, metavar="TASK_ID", **extra)

    def agent_id(p: argparse.ArgumentParser, **extra: Any) -> None:
        p.add_argument("agent_id", type=nonempty, metavar="AGENT_ID", **extra)

    submit = client("submit", commands.submit, "submit a task to an agent type")
    submit.add_argument("agent_type", type=nonempty, metavar="AGENT_TYPE")
    submit.add_argument("description", metavar="DESCRIPTION")
    submit.add_argument("--context", help="JSON object with extra context for the agent")
    submit.add_argument("--max-steps", type=int)
    submit.add_argument(
        "--budget-usd", type=positive, help="cap on what the task may spend on LLM calls, in USD"
    )
    submit.add_argument(
        "--idempotency-key",
        type=nonempty,
        help="retrying with the same key returns the same task (printable ASCII)",
    )

    add_code_commands(client, task_id, submit)
    add_workflow_commands(sub, common)

    tasks = client("tasks", commands.tasks, "list tasks (newest first), or show one")
    task_id(tasks, nargs="?")
    tasks.add_argument("--status", choices=get_args(TaskStatus))
    tasks.add_argument(
        "--type", type=nonempty, metavar="AGENT_TYPE", help="only this agent type (filtered here)"
    )
    tasks.add_argument("--limit", type=count, help="at most this many (default 100)")
    tasks.add_argument("--offset", type=start, default=0, help="skip this many first")
    task_id(client("task", commands.task, "show one task", aliases=["show"]))

    agents = client("agents", commands.agents, "list agents, or show one agent's status")
    agent_id(agents, nargs="?")
    agents.add_argument("--status", choices=get_args(AgentStatus))
    client("inbox", commands.inbox, "list the open questions agents ask humans, and how to answer")

    respond = client("respond", commands.respond, "answer an agent that asked for human input")
    agent_id(respond)
    answer = respond.add_mutually_exclusive_group(required=True)
    answer.add_argument("response", nargs="?", metavar="RESPONSE", help="JSON, or plain text")
    answer.add_argument("--yes", action="store_true", help='answer "yes" (a yes/no question)')
    answer.add_argument("--no", action="store_true", help='answer "no"')
    answer.add_argument("--choice", metavar="TEXT", help="one of a multiple-choice question's")
    answer.add_argument("--approve", action="store_true", help="approve a held tool call")
    answer.add_argument("--refuse", action="store_true", help="refuse a held tool call")
    answer.add_argument("--budget", type=positive, metavar="USD", help="raise the task's budget")
    answer.add_argument("--stop", action="store_true", help="end a task at its budget")
    respond.add_argument("--comment", help="why (with --approve, --refuse or --stop)")
    respond.add_argument("--request-id", type=nonempty)

    agent_id(client("pause", commands.pause, "pause an agent"))
    agent_id(client("resume", commands.resume, "resume a paused agent"))
    task_id(client("cancel", commands.cancel, "cancel a task"))
    client("health", commands.health, "show the edge's health (exit 1 when degraded)")

    watch = client(
        "watch",
        _watch,
        "follow a task live until it ends (exit 0 completed, 1 failed or cancelled)",
    )
    task_id(watch)
    watch.add_argument(
        "--interval",
        type=positive,
        default=1.0,
        help="seconds between polls when the event stream is unavailable (default 1)",
    )
    watch.set_defaults(stream=True)
    logs = client("logs", _logs, "print a task's events, one a line")
    task_id(logs)
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new events until the task ends"
    )
    logs.set_defaults(stream=True)
