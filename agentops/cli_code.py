"""The CLI's commands for code in and out: `upload`, `files`, `diff`, `download`, `say`.

Rules:
- `files` and `say` answer like every client command (`Shown`: a table or a line for people,
  `-o json` for scripts). `diff` writes the unified diff to stdout as it arrives (pipe it to
  a pager or `git apply`); `download` writes the archive to `-o FILE` (default
  `<task_id>.tar.gz` or `.zip`), never to a terminal.
- `upload` sends a `.tar.gz` or `.zip` file and prints its upload id; `submit --upload FILE`
  does it and starts the task from it in one go.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from agentops import cli_output as out
from agentops.cli_client import Client, json_argument, path_id
from agentops.cli_output import Shown
from agentops.protocol.errors import ConfigError


def upload_file(client: Client, path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{path}: no such file (an archive: .tar.gz or .zip)")
    with file.open("rb") as fh:
        answer = client.post("/uploads", content=fh)
    return answer if isinstance(answer, dict) else {}


def upload(args: argparse.Namespace, client: Client) -> Shown:
    answer = upload_file(client, args.file)
    text = (
        f"upload {answer.get('upload_id')}: {answer.get('files')} files; start a task from it "
        f'with `agentops submit TYPE "..." --upload-id {answer.get("upload_id")}`'
    )
    return Shown(answer, partial(out.render_line, text=text))


def workspace_of(args: argparse.Namespace, client: Client) -> dict[str, Any] | None:
    """`submit`'s workspace from its flags (at most one source)."""
    given = [f for f in ("repo", "upload", "upload_id", "from_task") if getattr(args, f, None)]
    if len(given) > 1:
        raise ConfigError("give at most one of --repo, --upload, --upload-id, --from-task")
    if args.ref and not args.repo:
        raise ConfigError("--ref goes with --repo")
    if args.repo:
        git: dict[str, Any] = {"url": args.repo}
        if args.ref:
            git["ref"] = args.ref
        return {"git": git}
    if args.upload:
        return {"upload": upload_file(client, args.upload)["upload_id"]}
    if args.upload_id:
        return {"upload": args.upload_id}
    if args.from_task:
        return {"from_task": args.from_task}
    return None


def files(args: argparse.Namespace, client: Client) -> Shown:
    return Shown(client.get(f"/tasks/{path_id(args.task_id)}/files"), render_files)


def render_files(console: Console, body: Any) -> None:
    rows = body.get("files") if isinstance(body, dict) else None
    if not isinstance(rows, list):
        out.print_json(console, body)
        return
    table: list[dict[str, out.Cell]] = [
        {"PATH": str(f.get("path")), "SIZE": str(f.get("size")), "MODIFIED": str(f.get("modified"))}
        for f in rows
    ]
    out.print_table(console, table, ("PATH", "SIZE", "MODIFIED"), wrap=("PATH",))
    if body.get("truncated"):
        console.print("(the list was cut: too many files)")


def diff(args: argparse.Namespace, client: Client) -> int:
    client.download(f"/tasks/{path_id(args.task_id)}/diff", sys.stdout.buffer.write)
    sys.stdout.flush()
    return 0


def download(args: argparse.Namespace, client: Client) -> int:
    target = Path(args.output_file or f"{args.task_id}.{args.format}")
    with target.open("wb") as fh:
        size = client.download(
            f"/tasks/{path_id(args.task_id)}/archive?format={args.format}", fh.write
        )
    print(f"{target}: {size} bytes", file=sys.stderr)
    return 0


def say(args: argparse.Namespace, client: Client) -> Shown:
    body: dict[str, Any] = {"message": args.message}
    if args.context is not None:
        body["context"] = json_argument(args.context, "--context")
    answer = client.call(
        "POST", f"/tasks/{path_id(args.task_id)}/messages", json=body, ok=(202,)
    ).body
    text = ""
    if isinstance(answer, dict):
        text = f"task {answer.get('task_id')}: {answer.get('status')} (run {answer.get('run')})"
    return Shown(answer, partial(out.render_line, text=text))


def add_code_commands(client: Any, task_id: Any, submit: argparse.ArgumentParser) -> None:
    """The code commands, added with `cli_args`' helpers; `submit` gains its source flags."""
    source = submit.add_argument_group("workspace (at most one source)")
    source.add_argument("--repo", help="a git URL or local path to clone ([workspaces] allow)")
    source.add_argument("--ref", help="a branch, tag or commit of --repo")
    source.add_argument("--upload", metavar="FILE", help="a .tar.gz or .zip to start from")
    source.add_argument("--upload-id", help="an upload made with `agentops upload`")
    source.add_argument("--from-task", metavar="TASK_ID", help="start from a task's files")
    up = client("upload", upload, "upload a .tar.gz or .zip to start tasks from")
    up.add_argument("file", metavar="FILE")
    task_id(client("files", files, "list a task's files"))
    d = client("diff", diff, "print a task's diff (unified, from its base)")
    task_id(d)
    d.set_defaults(raw=True)
    dl = client("download", download, "save a task's workspace as an archive")
    task_id(dl)
    dl.add_argument("-O", "--output-file", metavar="FILE", help="default: TASK_ID.<format>")
    dl.add_argument("--format", choices=("tar.gz", "zip"), default="tar.gz")
    dl.set_defaults(raw=True)
    s = client("say", say, "send a task a message: a follow-up run, or steering while it runs")
    task_id(s)
    s.add_argument("message", metavar="MESSAGE")
    s.add_argument("--context", help="JSON object (e.g. a mock script for the follow-up)")
