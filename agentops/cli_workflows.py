"""The CLI's `workflow` commands: run a TOML file, list, show, cancel, answer a gate.

A workflow file is the body of `POST /workflows` in TOML:

    name = "todo app"
    [workspace.git]              # optional: git / upload / from_task, as for a task
    url = "https://github.com/me/app.git"

    [[stages]]
    id = "api"
    agent_type = "backend_developer"
    description = "A REST API for todos, with tests"

    [[stages]]
    id = "deploy"
    agent_type = "devops_engineer"
    description = "Dockerfile and compose"
    depends_on = ["api"]
    approval = true              # waits for `agentops workflow approve WF`
"""

from __future__ import annotations

import argparse
import tomllib
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from agentops import cli_output as out
from agentops.cli_client import Client, path_id, with_query
from agentops.cli_output import Shown
from agentops.protocol.errors import ConfigError


def read_workflow(path: str) -> dict[str, Any]:
    try:
        with Path(path).open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def run(args: argparse.Namespace, client: Client) -> Shown:
    answer = client.post("/workflows", json=read_workflow(args.file))
    text = (
        f"workflow {answer.get('workflow_id')} ({answer.get('status')})"
        if isinstance(answer, dict)
        else ""
    )
    return Shown(answer, partial(out.render_line, text=text))


def listing(args: argparse.Namespace, client: Client) -> Shown:
    return Shown(client.get(with_query("/workflows", status=args.status)), render_workflows)


def show(args: argparse.Namespace, client: Client) -> Shown:
    return Shown(client.get(f"/workflows/{path_id(args.workflow_id)}"), render_workflow)


def cancel(args: argparse.Namespace, client: Client) -> Shown:
    answer = client.post(f"/workflows/{path_id(args.workflow_id)}/cancel")
    text = f"workflow {args.workflow_id}: {answer.get('status') if isinstance(answer, dict) else answer}"
    return Shown(answer, partial(out.render_line, text=text))


def approve(args: argparse.Namespace, client: Client) -> Shown:
    response: dict[str, Any] = {"approved": not args.refuse}
    if args.comment:
        response["comment"] = args.comment
    answer = client.call(
        "POST", f"/workflows/{path_id(args.workflow_id)}/human-response",
        json={"response": response}, ok=(202,),
    ).body  # fmt: skip
    text = f"workflow {args.workflow_id}: {answer.get('status') if isinstance(answer, dict) else answer}"
    return Shown(answer, partial(out.render_line, text=text))


def render_workflows(console: Console, body: Any) -> None:
    rows = body.get("workflows") if isinstance(body, dict) else None
    if not isinstance(rows, list):
        out.print_json(console, body)
        return
    table: list[dict[str, out.Cell]] = [
        {
            "WORKFLOW": str(w.get("workflow_id")),
            "STATUS": out.status_text(w.get("status")),
            "STAGES": f"{sum(1 for s in w.get('stages', []) if s.get('status') == 'completed')}"
            f"/{len(w.get('stages', []))}",
            "NAME": str(w.get("name") or ""),
        }
        for w in rows
    ]
    out.print_table(console, table, ("WORKFLOW", "STATUS", "STAGES", "NAME"), wrap=("NAME",))


def render_workflow(console: Console, body: Any) -> None:
    if not isinstance(body, dict) or not isinstance(body.get("stages"), list):
        out.print_json(console, body)
        return
    console.print(f"{body.get('workflow_id')} {body.get('name') or ''}: {body.get('status')}")
    if body.get("awaiting_approval"):
        console.print(f"stage {body['awaiting_approval']} waits for approval: "
                      f"agentops workflow approve {body.get('workflow_id')} [--refuse]")  # fmt: skip
    table: list[dict[str, out.Cell]] = [
        {
            "STAGE": str(s.get("id")),
            "TYPE": str(s.get("agent_type")),
            "STATUS": out.status_text(s.get("status")),
            "DEPENDS ON": ", ".join(s.get("depends_on") or []),
            "TASK": str(s.get("task_id") or ""),
        }
        for s in body["stages"]
    ]
    out.print_table(console, table, ("STAGE", "TYPE", "STATUS", "DEPENDS ON", "TASK"), wrap=())


def add_workflow_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """`agentops workflow run|list|show|cancel|approve`."""
    parser = sub.add_parser("workflow", help="run and follow workflows of stages")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name: str, func: Any, summary: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = verbs.add_parser(name, parents=[common], help=summary)
        p.set_defaults(func=func, client=True, stream=False)
        return p

    verb("run", run, "submit a workflow from a TOML file").add_argument("file", metavar="FILE.toml")
    verb("list", listing, "list workflows").add_argument("--status")
    for name, func, summary in (("show", show, "show a workflow's stages"),
                                ("cancel", cancel, "cancel a workflow")):  # fmt: skip
        verb(name, func, summary).add_argument("workflow_id", metavar="WORKFLOW_ID")
    gate = verb("approve", approve, "answer the approval gate a workflow waits at")
    gate.add_argument("workflow_id", metavar="WORKFLOW_ID")
    gate.add_argument("--refuse", action="store_true", help="refuse the stage (cancels the rest)")
    gate.add_argument("--comment")
