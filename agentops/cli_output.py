"""How the CLI shows the edge's answers to people: tables and key/value views with rich.

Rules:
- `-o json` prints the edge's JSON as it came (indented); every other view is for people
  and may change. A body of a shape a view does not know is printed as JSON instead, so
  an older or newer edge never makes a view fail.
- Colour and live updates only on a terminal (rich's detection, which also honours
  NO_COLOR / FORCE_COLOR / TTY_COMPATIBLE); piped output is plain text, 120 columns unless
  COLUMNS says otherwise.
- A reader that goes away (`agentops tasks | head -1`) surfaces as BrokenPipeError for
  `cli.main` to end quietly; rich's own handling (exit 1) is replaced.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from agentops.cli_events import answer_commands, money, parse_ts, short

STATUS_STYLES = {
    "completed": "green",
    "healthy": "green",
    "up": "green",
    "failed": "red",
    "missing": "red",
    "degraded": "red",
    "cancelled": "yellow",
    "paused": "yellow",
    "awaiting_human": "bold magenta",
    "running": "cyan",
}
Render = Callable[[Console, Any], None]


class OutputConsole(Console):
    """A rich Console whose broken pipe is a BrokenPipeError (rich would exit 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


@dataclass
class Shown:
    """What a client command answers: `body` for `-o json`, `render` for people, the exit
    code."""

    body: Any
    render: Callable[[Console, Any], None]
    code: int = 0


def make_console(file: TextIO | None = None) -> Console:
    out = file if file is not None else sys.stdout
    console = OutputConsole(file=out, highlight=False, emoji=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = OutputConsole(file=out, highlight=False, emoji=False, width=120)
    return console


def print_json(console: Console, body: Any) -> None:
    console.out(json.dumps(body, indent=2), highlight=False)


def status_text(status: Any) -> Text:
    return Text(str(status), style=STATUS_STYLES.get(str(status), ""))


def age(value: Any, now: datetime) -> str:
    """How long ago an ISO timestamp was, kubectl style: 45s, 12m, 3h, 5d."""
    ts = parse_ts(value)
    if ts is None:
        return "-"
    seconds = max(int((now - (ts if ts.tzinfo else ts.replace(tzinfo=UTC))).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _cost(record: dict[str, Any]) -> str:
    cost = record.get("cost_usd", (record.get("usage") or {}).get("cost_usd"))
    return money(float(cost)) if isinstance(cost, int | float) else "-"


Cell = str | Text


def print_table(
    console: Console,
    rows: list[dict[str, Cell]],
    columns: tuple[str, ...],
    *,
    wrap: tuple[str, ...] = ("DESCRIPTION",),
    optional: tuple[str, ...] = (),
) -> None:
    """A table whose columns not in `wrap` (ids, statuses, figures) are never wrapped or cut:
    when the width is short, `optional` columns are left out, in that order, until it fits.
    rich pads every cell to its column's width; piped, the lines lose that trailing space."""
    shown = list(columns)
    while True:
        table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
        for name in shown:
            table.add_column(name, no_wrap=name not in wrap, overflow="fold")
        for row in rows:
            table.add_row(*(row.get(name, "") for name in shown))
        needed = Measurement.get(console, console.options.update_width(10**6), table).minimum
        left_out = [name for name in optional if name in shown]
        if needed <= console.width or not left_out:
            break
        shown.remove(left_out[0])
    if console.is_terminal:
        console.print(table)
        return
    with console.capture() as captured:
        console.print(table)
    for line in captured.get().splitlines():
        console.out(line.rstrip(), highlight=False)


def _rows(body: Any, key: str) -> list[dict[str, Any]] | None:
    rows = body.get(key) if isinstance(body, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return None
    return rows


def render_tasks(console: Console, body: Any, *, offset: int = 0, now: datetime) -> None:
    tasks = _rows(body, "tasks")
    if tasks is None:
        return print_json(console, body)
    rows: list[dict[str, Cell]] = [
        {
            "TASK": str(task.get("task_id")),
            "TYPE": str(task.get("agent_type", "")),
            "STATUS": status_text(task.get("status")),
            "STEP": str(task.get("current_step", "")),
            "COST": _cost(task),
            "AGE": age(task.get("created_at"), now),
            "DESCRIPTION": short(task.get("description", ""), 60),
        }
        for task in tasks
    ]
    if not rows:
        console.print("no tasks")
        return
    columns = ("TASK", "TYPE", "STATUS", "STEP", "COST", "AGE", "DESCRIPTION")
    print_table(console, rows, columns, optional=("AGE", "COST", "STEP", "DESCRIPTION", "TYPE"))
    total = body.get("total")
    if isinstance(total, int):
        more = offset + len(tasks) < total
        hint = f" (--offset {offset + len(tasks)} for more)" if more else ""
        console.print(f"{offset + 1}-{offset + len(tasks)} of {total}{hint}", style="dim")


def _pairs(console: Console, pairs: Iterable[tuple[str, Any]]) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name, value in pairs:
        if value is not None and value != "" and value != []:
            grid.add_row(name, value if isinstance(value, Text) else str(value))
    console.print(grid)


def render_task(console: Console, body: Any, *, now: datetime) -> None:
    if not isinstance(body, dict) or "task_id" not in body:
        return print_json(console, body)
    usage = body.get("usage") or {}
    result, error = body.get("result") or {}, body.get("error") or {}
    tokens = None
    if usage:
        tokens = f"{usage.get('input_tokens', 0):,} in, {usage.get('output_tokens', 0):,} out"
    steps = body.get("current_step")
    if body.get("max_steps"):
        steps = f"{steps} of {body['max_steps']}"
    budget = body.get("budget_usd")
    _pairs(
        console,
        [
            ("task", body["task_id"]),
            ("type", body.get("agent_type")),
            ("status", status_text(body.get("status"))),
            ("agent", ", ".join(body.get("agent_ids") or []) or body.get("agent_id")),
            ("parent", body.get("parent_task_id")),
            ("children", ", ".join(body.get("children") or [])),
            ("step", steps),
            ("tokens", tokens),
            ("cost", _cost(body) + (f" of {money(budget)} budget" if budget else "")),
            ("created", f"{body.get('created_at')} ({age(body.get('created_at'), now)} ago)"),
            ("finished", body.get("finished_at")),
            ("description", body.get("description")),
            ("summary", result.get("summary")),
            ("artifacts", ", ".join(map(str, result.get("artifacts") or []))),
            ("error", f"{error.get('code')}: {error.get('message')}" if error else None),
        ],
    )
    if body.get("status") == "awaiting_human":
        console.print("waiting for a human: see `agentops inbox`", style="magenta")


def render_agents(console: Console, body: Any) -> None:
    agents = _rows(body, "agents")
    if agents is None:
        return print_json(console, body)
    rows: list[dict[str, Cell]] = [
        {
            "AGENT": str(agent.get("agent_id")),
            "TYPE": str(agent.get("agent_type", "")),
            "STATUS": status_text(agent.get("status")),
            "STEP": str(agent.get("current_step", "")),
            "TASK": str(agent.get("task_id", "")),
            "DESCRIPTION": short(agent.get("current_task") or "", 50),
        }
        for agent in agents
    ]
    if not rows:
        console.print("no agents")
        return
    columns = ("AGENT", "TYPE", "STATUS", "STEP", "TASK", "DESCRIPTION")
    print_table(console, rows, columns, optional=("STEP", "DESCRIPTION", "TYPE"))


def render_agent(console: Console, body: Any) -> None:
    if not isinstance(body, dict) or "agent_id" not in body:
        return print_json(console, body)
    task = body.get("task") or {}
    usage = body.get("usage") or {}
    request = body.get("human_request") or None
    steps = f"{body.get('current_step')} of {body.get('max_steps')}"
    _pairs(
        console,
        [
            ("agent", body["agent_id"]),
            ("type", body.get("agent_type")),
            ("status", status_text(body.get("status"))),
            ("step", steps),
            ("task", task.get("task_id")),
            ("description", task.get("description")),
            ("tool calls", body.get("tool_calls")),
            ("errors", body.get("errors")),
            ("cost", money(usage["cost_usd"]) if "cost_usd" in usage else None),
            ("question", request.get("question") if request else None),
        ],
    )
    if request:
        console.print("answer with:", style="bold")
        for line in answer_commands(body["agent_id"], request):
            console.print(f"  {line}", markup=False)


def render_health(console: Console, body: Any) -> None:
    services = body.get("services") if isinstance(body, dict) else None
    if not isinstance(services, dict):
        return print_json(console, body)
    nats = body.get("nats") or {}
    where = f"NATS {nats.get('server')} ({nats.get('version')})" if nats.get("connected") else ""
    console.print(Text.assemble(status_text(body.get("status")), "  ", where or "NATS down"))
    rows: list[dict[str, Cell]] = []
    for name, info in services.items():
        info = info if isinstance(info, dict) else {}
        isolation = info.get("isolation")
        rows.append(
            {
                "PROCESS": name,
                "STATUS": status_text(info.get("status")),
                "INSTANCES": str(info.get("instances", "")),
                "NOTE": f"sandbox {isolation.get('mode')}" if isinstance(isolation, dict) else "",
            }
        )
    print_table(console, rows, ("PROCESS", "STATUS", "INSTANCES", "NOTE"), wrap=("NOTE",))


def render_inbox(console: Console, body: Any) -> None:
    """One block per open question: who asks, what, and the command lines that answer it."""
    requests = _rows(body, "requests")
    if requests is None:
        return print_json(console, body)
    if not requests:
        console.print("no open questions")
        return
    for n, item in enumerate(requests):
        request = item.get("request") or {}
        reason = request.get("reason")
        asks = reason if reason in ("approval", "budget") else request.get("format", "free_text")
        if request.get("choices"):
            asks += ": " + ", ".join(map(str, request["choices"]))
        if n:
            console.print()
        head = Text.assemble(
            (str(item.get("agent_id")), "bold"),
            f"  {item.get('agent_type') or ''}  task {item.get('task_id')}  ",
            (f"[{asks}]", STATUS_STYLES["awaiting_human"]),
        )
        console.print(head, soft_wrap=True)
        for line in str(request.get("question", "")).splitlines() or [""]:
            console.print(Text(f"  {line}"), soft_wrap=True)
        for line in item.get("answer_with") or []:
            console.print(Text(f"  → {line}", style="dim"), soft_wrap=True)


def render_line(console: Console, body: Any, text: str) -> None:
    """One line saying what happened, or the JSON when the body is not what was expected."""
    if not isinstance(body, dict) or "status" not in body:
        return print_json(console, body)
    console.print(text, markup=False, soft_wrap=True)
