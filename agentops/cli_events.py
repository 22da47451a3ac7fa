"""What the CLI makes of events and questions, as plain data and text. Pure: no I/O.

Rules:
- Frames are the WebSocket's `{seq, type, ts, task_id, agent_id, data}` (`edge/ws.py`); a
  field missing or of the wrong type is shown as absent, never an exception (an older or
  newer edge may send other shapes).
- `Progress` folds one task's frames into what `agentops watch` shows: status, step, the tool
  running now, tokens and cost (summed from `llm.response`), an open question, the outcome.
  A `task.completed|failed|cancelled` of the task sets the outcome; a later sign of a new run
  (`task.resumed`, the agent running again) clears it, so a follow-up is not taken for the end.
- One line per event for `agentops logs`; `llm.delta` (streamed text, repeated whole in the
  `llm.response` that follows) is left out.
- `answer_commands` spells the `agentops respond` command lines that fit an open question
  (the rules of `core/answers.py`).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

TERMINAL_EVENTS = {
    "task.completed": "completed",
    "task.failed": "failed",
    "task.cancelled": "cancelled",
}
RUNNING_AGAIN = frozenset({"running", "queued", "idle"})
HIDDEN_EVENTS = frozenset({"llm.delta"})
CUT = 120


def parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def short(value: Any, limit: int = CUT) -> str:
    """One line of at most `limit` characters: strings as they are, the rest as JSON."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def money(usd: float) -> str:
    return f"${usd:.4f}" if usd < 1 else f"${usd:,.2f}"


@dataclass
class Progress:
    """One task as `agentops watch` shows it, updated frame by frame."""

    task_id: str
    status: str = "queued"
    step: int = 0
    max_steps: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    question: str | None = None
    outcome: str | None = None
    detail: str | None = None
    last_seq: int = 0
    tools: dict[str, str] = field(default_factory=dict)  # call id -> tool, while running

    @property
    def tool(self) -> str | None:
        return next(reversed(self.tools.values()), None)

    def apply(self, frame: dict[str, Any]) -> None:
        seq = frame.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool):
            self.last_seq = max(self.last_seq, seq)
        kind, data = frame.get("type"), _dict(frame.get("data"))
        if kind in TERMINAL_EVENTS and frame.get("task_id") == self.task_id:
            self._finish(TERMINAL_EVENTS[kind], data)
        elif kind == "task.resumed":
            self.outcome = self.detail = None
            self.status = "running"
        elif kind == "agent.status" and isinstance(data.get("status"), str):
            self.status = data["status"]
            if self.status in RUNNING_AGAIN:
                self.outcome = self.detail = None
            elif self.status in TERMINAL_EVENTS.values():
                self.tools.clear()  # complete_task has no result event
        elif kind == "agent.step":
            self.step = max(self.step, _int(data.get("step")))
            self.max_steps = _int(data.get("max_steps")) or self.max_steps
        elif kind == "llm.response":
            usage = _dict(data.get("usage"))
            self.input_tokens += _int(usage.get("input_tokens"))
            self.output_tokens += _int(usage.get("output_tokens"))
            self.cost_usd += _num(usage.get("cost_usd", data.get("cost_usd")))
        elif kind == "tool.call" and isinstance(data.get("call_id"), str):
            self.tools[data["call_id"]] = str(data.get("name") or "?")
        elif kind == "tool.result":
            self.tools.pop(str(data.get("call_id")), None)
        elif kind == "human.request":
            self.question = short(data.get("question") or "?")
        elif kind == "human.response":
            self.question = None

    def _finish(self, outcome: str, data: dict[str, Any]) -> None:
        self.outcome = self.status = outcome
        self.tools.clear()
        self.question = None
        steps = _int(data.get("steps"))
        self.step = max(self.step, steps)
        usage = _dict(data.get("usage"))
        if usage:  # the task's own total is authoritative at the end
            self.input_tokens = _int(usage.get("input_tokens"))
            self.output_tokens = _int(usage.get("output_tokens"))
            self.cost_usd = _num(usage.get("cost_usd"))
        result, error = _dict(data.get("result")), _dict(data.get("error"))
        self.detail = short(result.get("summary") or error.get("message") or "") or None

    def apply_record(self, record: dict[str, Any]) -> None:
        """Take what a task record (`GET /tasks/{id}`) knows: used when polling."""
        status = record.get("status")
        if isinstance(status, str):
            self.status = status
        self.step = max(self.step, _int(record.get("current_step")))
        self.max_steps = _int(record.get("max_steps")) or self.max_steps
        usage = _dict(record.get("usage"))
        if usage:
            self.input_tokens = _int(usage.get("input_tokens"))
            self.output_tokens = _int(usage.get("output_tokens"))
            self.cost_usd = _num(usage.get("cost_usd"))
        if status not in TERMINAL_EVENTS.values():
            self.outcome = self.detail = None  # running (again): an earlier end is history
            return
        self.outcome = str(status)
        self.tools.clear()
        self.question = None
        result, error = _dict(record.get("result")), _dict(record.get("error"))
        self.detail = short(result.get("summary") or error.get("message") or "") or None

    def snapshot(self) -> dict[str, Any]:
        """The progress as JSON (for `watch -o json`)."""
        return {
            "task_id": self.task_id,
            "status": self.status,
            "step": self.step,
            "max_steps": self.max_steps,
            "tool": self.tool,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 10),
            "question": self.question,
            "outcome": self.outcome,
            "detail": self.detail,
        }

    def line(self) -> str:
        steps = f"step {self.step}" + (f"/{self.max_steps}" if self.max_steps else "")
        parts = [self.status, steps]
        if self.tool:
            parts.append(f"tool {self.tool}")
        tokens = self.input_tokens + self.output_tokens
        parts.append(f"{tokens:,} tokens ({self.input_tokens:,} in, {self.output_tokens:,} out)")
        parts.append(money(self.cost_usd))
        if self.question:
            parts.append(f"asks: {self.question}")
        if self.detail:
            parts.append(self.detail)
        return f"{self.task_id}  " + " · ".join(parts)


def event_summary(frame: dict[str, Any]) -> str:
    """What one event says, in one line (without time, seq and type)."""
    kind, data = frame.get("type"), _dict(frame.get("data"))
    match kind:
        case "task.created":
            return f"{data.get('agent_type', '?')}: {short(data.get('description', ''))}"
        case "agent.status":
            previous = data.get("previous")
            text = f"{previous} → {data.get('status')}" if previous else str(data.get("status"))
            why = data.get("reason") or _dict(data.get("error")).get("message")
            return f"{text} ({short(why, 80)})" if why else text
        case "agent.step":
            of = f"/{data['max_steps']}" if data.get("max_steps") else ""
            return f"step {data.get('step')}{of}"
        case "llm.response":
            usage = _dict(data.get("usage"))
            calls = [str(_dict(c).get("name")) for c in data.get("tool_calls") or []]
            tokens = f"{_int(usage.get('input_tokens'))}+{_int(usage.get('output_tokens'))} tokens"
            text = f"{tokens} {money(_num(usage.get('cost_usd')))}"
            if calls:
                text += f" → {', '.join(calls)}"
            return f"{text}  {short(data['text'], 80)}" if data.get("text") else text
        case "llm.error" | "command.rejected":
            error = _dict(data.get("error"))
            if error:
                return f"{error.get('code')}: {short(error.get('message', ''))}"
            return f"{data.get('command', '')}: {short(data.get('reason', ''))}"
        case "tool.call":
            return f"{data.get('name')} {short(data.get('arguments', {}))}"
        case "tool.result":
            if data.get("ok"):
                return f"{data.get('name')} ok {short(data.get('result'), 100)}"
            error = _dict(data.get("error"))
            return f"{data.get('name')} error {error.get('code')}: {short(error.get('message'))}"
        case "human.request":
            fmt, choices = data.get("format"), data.get("choices")
            how = f"{fmt}: {', '.join(map(str, choices))}" if choices else str(fmt)
            return f"{data.get('reason', 'tool')} [{how}] {short(data.get('question', ''))}"
        case "human.response":
            return short(data.get("response"))
        case "task.completed" | "task.failed" | "task.cancelled":
            result, error = _dict(data.get("result")), _dict(data.get("error"))
            usage = _dict(data.get("usage"))
            text = f"after {data.get('steps', '?')} steps, {money(_num(usage.get('cost_usd')))}"
            said = result.get("summary") or error.get("message")
            return f"{text}: {short(said)}" if said else text
    return short(data) if data else ""


def event_line(frame: dict[str, Any]) -> str:
    """`HH:MM:SS  #seq  type  agent  summary` for `agentops logs`."""
    ts = parse_ts(frame.get("ts"))
    clock = ts.strftime("%H:%M:%S") if ts else "--:--:--"
    agent = str(frame.get("agent_id") or "-")
    return f"{clock}  #{frame.get('seq', '?')}  {frame.get('type', '?'):<16} {agent}  {event_summary(frame)}"


def answer_commands(agent_id: str, request: dict[str, Any]) -> list[str]:
    """The `agentops respond` command lines that answer this open question."""
    base = f"agentops respond {shlex.quote(agent_id)}"
    reason, fmt = request.get("reason"), request.get("format")
    choices = request.get("choices") or []
    if reason == "approval":
        return [f"{base} --approve", f"{base} --refuse --comment 'why'"]
    if reason == "budget":
        return [f"{base} --budget USD", f"{base} --stop"]
    if fmt == "yes_no":
        return [f"{base} --yes", f"{base} --no"]
    if fmt == "multiple_choice" and choices:
        return [f"{base} --choice {shlex.quote(str(c))}" for c in choices]
    return [f"{base} 'your answer'"]
