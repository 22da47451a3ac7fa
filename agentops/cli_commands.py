"""The CLI's client commands: what each asks the edge, and which view shows the answer.

Rules:
- A command returns `Shown(body, render, code)`: `body` is what `-o json` prints (the edge's
  JSON, or for `inbox` and a `--type` listing the CLI's own assembly of it), `render` the view
  for people. Streaming commands (`watch`, `logs`) print as they go and return an exit code.
- `tasks --type` is filtered here: `GET /tasks` filters by status but not by agent type, so the
  CLI reads the (status-filtered) list in pages of 500 and pages through the matches itself;
  `total` is then the number of matches. A `--limit` over 500 is read in pages as well.
- Without paging flags `tasks` sends a bare `GET /tasks` (the edge's default page, 100).
- `respond` builds the answer from its flags: `--yes`/`--no` are "yes"/"no", `--choice`
  the text, `--approve`/`--refuse` `{"approved": bool, "comment"?}`, `--budget`
  `{"budget_usd": n}`, `--stop` `{"stop": true, "comment"?}`; a positional RESPONSE is JSON,
  or plain text when it does not parse. The edge checks it against the question.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from functools import partial
from typing import Any

from agentops import cli_output as out
from agentops.cli_client import Client, json_argument, path_id, with_query
from agentops.cli_code import workspace_of
from agentops.cli_events import answer_commands
from agentops.cli_output import Shown
from agentops.protocol.errors import ConfigError

PAGE = 500


def submit(args: argparse.Namespace, client: Client) -> Shown:
    body: dict[str, Any] = {"agent_type": args.agent_type, "description": args.description}
    if args.context is not None:
        body["context"] = json_argument(args.context, "--context")
    if args.max_steps is not None:
        body["max_steps"] = args.max_steps
    if args.budget_usd is not None:
        body["budget_usd"] = args.budget_usd
    workspace = workspace_of(args, client)
    if workspace is not None:
        body["workspace"] = workspace
    headers = {} if args.idempotency_key is None else {"Idempotency-Key": args.idempotency_key}
    answer = client.post("/tasks", json=body, headers=headers)
    text = ""
    if isinstance(answer, dict):
        text = (
            f"task {answer.get('task_id')} ({answer.get('status')}), agent "
            f"{answer.get('agent_id')}: follow it with `agentops watch {answer.get('task_id')}`"
        )
    return Shown(answer, partial(out.render_line, text=text))


def _task_page(body: Any) -> list[dict[str, Any]] | None:
    tasks = body.get("tasks") if isinstance(body, dict) else None
    return tasks if isinstance(tasks, list) else None


def list_tasks(
    client: Client, status: str | None, agent_type: str | None, limit: int | None, offset: int
) -> Any:
    """`{"tasks": [...], "total": n}` as GET /tasks answers it, paged and filtered as asked."""
    if agent_type is None and (limit is None or limit <= PAGE):
        return client.get(with_query("/tasks", status=status, limit=limit, offset=offset or None))
    want = limit or 100
    found: list[dict[str, Any]] = []
    position, total = 0 if agent_type else offset, 0
    while True:
        size = PAGE if agent_type else min(PAGE, want - len(found))
        body = client.get(with_query("/tasks", status=status, limit=size, offset=position or None))
        page = _task_page(body)
        if page is None:
            return body  # not a listing: let the view show what it is
        total = body.get("total", 0) if isinstance(body.get("total"), int) else 0
        found += [t for t in page if agent_type is None or t.get("agent_type") == agent_type]
        position += len(page)
        if not page or position >= total or (agent_type is None and len(found) >= want):
            break
    if agent_type is None:
        return {"tasks": found[:want], "total": total}
    return {"tasks": found[offset : offset + want], "total": len(found)}


def tasks(args: argparse.Namespace, client: Client) -> Shown:
    if args.task_id is not None:
        return task(args, client)
    body = list_tasks(client, args.status, args.type, args.limit, args.offset)
    now = datetime.now(UTC)
    return Shown(body, partial(out.render_tasks, offset=args.offset, now=now))


def task(args: argparse.Namespace, client: Client) -> Shown:
    body = client.get(f"/tasks/{path_id(args.task_id)}")
    return Shown(body, partial(out.render_task, now=datetime.now(UTC)))


def agents(args: argparse.Namespace, client: Client) -> Shown:
    if args.agent_id is not None:
        return Shown(client.get(f"/agents/{path_id(args.agent_id)}/status"), out.render_agent)
    return Shown(client.get(with_query("/agents", status=args.status)), out.render_agents)


def inbox(args: argparse.Namespace, client: Client) -> Shown:
    """Every open human request: the agents awaiting a human, each with its question."""
    listing = client.get("/agents?status=awaiting_human")
    waiting = listing.get("agents") if isinstance(listing, dict) else None
    if not isinstance(waiting, list):
        return Shown(listing, out.render_inbox)
    requests = []
    for agent in waiting:
        agent_id = str(agent.get("agent_id"))
        status = client.get(f"/agents/{path_id(agent_id)}/status")
        request = status.get("human_request") if isinstance(status, dict) else None
        if not isinstance(request, dict):
            continue  # answered meanwhile
        requests.append(
            {
                "agent_id": agent_id,
                "agent_type": agent.get("agent_type"),
                "task_id": agent.get("task_id") or (status.get("task") or {}).get("task_id"),
                "request": request,
                "answer_with": answer_commands(agent_id, request),
            }
        )
    return Shown({"requests": requests}, out.render_inbox)


def answer_from(args: argparse.Namespace) -> Any:
    """The response a `respond` command line means (usage errors are ConfigErrors)."""
    with_comment = args.approve or args.refuse or args.stop
    if args.comment is not None and not with_comment:
        raise ConfigError("--comment goes with --approve, --refuse or --stop")
    comment = {} if args.comment is None else {"comment": args.comment}
    if args.yes or args.no:
        return "yes" if args.yes else "no"
    if args.choice is not None:
        return args.choice
    if args.approve or args.refuse:
        return {"approved": bool(args.approve), **comment}
    if args.budget is not None:
        return {"budget_usd": args.budget}
    if args.stop:
        return {"stop": True, **comment}
    try:
        return json.loads(args.response)
    except ValueError:
        return args.response  # plain text is a valid answer too


def respond(args: argparse.Namespace, client: Client) -> Shown:
    body: dict[str, Any] = {"response": answer_from(args)}
    if args.request_id is not None:
        body["request_id"] = args.request_id
    answer = client.post(f"/agents/{path_id(args.agent_id)}/human-response", json=body)
    text = ""
    if isinstance(answer, dict):
        text = f"{answer.get('status')}: agent {args.agent_id} is {answer.get('agent_status')}"
    return Shown(answer, partial(out.render_line, text=text))


def _command(verb: str, path: str, args: argparse.Namespace, client: Client) -> Shown:
    answer = client.post(path)
    target = args.task_id if verb == "cancel" else args.agent_id
    text = f"{answer.get('status')}: {target}" if isinstance(answer, dict) else ""
    return Shown(answer, partial(out.render_line, text=text))


def pause(args: argparse.Namespace, client: Client) -> Shown:
    return _command("pause", f"/agents/{path_id(args.agent_id)}/pause", args, client)


def resume(args: argparse.Namespace, client: Client) -> Shown:
    return _command("resume", f"/agents/{path_id(args.agent_id)}/resume", args, client)


def cancel(args: argparse.Namespace, client: Client) -> Shown:
    return _command("cancel", f"/tasks/{path_id(args.task_id)}/cancel", args, client)


def health(args: argparse.Namespace, client: Client) -> Shown:
    """A degraded edge answers 503 with the same body: shown, with exit code 1."""
    reply = client.call("GET", "/health", ok=(503,))
    return Shown(reply.body, out.render_health, 0 if reply.status < 400 else 1)
