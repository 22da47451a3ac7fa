"""Run whole tasks in memory through the pure reducers: no NATS, no processes, milliseconds.

The harness plays the bus (a FIFO queue with JetStream-style dedup by message id), the LLM
gateway (any function from request to result) and the tool executor (an in-memory file
system). `redeliver=True` delivers every reducer message twice, as JetStream may after a
crash.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agentops.agents.definitions import AgentSpec
from agentops.agents.loader import shipped_specs
from agentops.core import agent, orchestrator, workflow
from agentops.core.effects import (
    CallLLM,
    Effect,
    Emit,
    InvokeTool,
    ReportToTask,
    SendToAgent,
    ToWorkspaces,
)
from agentops.core.state import AgentState, TaskRecord
from agentops.core.workflow import WorkflowRecord
from agentops.llm.types import LLMRequest, LLMResult
from agentops.protocol.errors import AgentOpsError, ErrorInfo
from agentops.protocol.messages import (
    AgentInbound,
    CommitWorkspace,
    Event,
    HumanResponse,
    LLMCompleted,
    LLMFailed,
    LLMRequested,
    PrepareWorkspace,
    SubmitTask,
    TaskInbound,
    ToolCompleted,
    ToolRequested,
    WorkspaceCommitted,
    WorkspaceReady,
)

LLM = Callable[[LLMRequest], LLMResult]


def default_llm(request: LLMRequest) -> LLMResult:
    from agentops.llm.mock import mock_reply

    return mock_reply(request)


@dataclass
class MemoryTools:
    """A tool executor over an in-memory file system (files, list, search, edit); execute_code
    just reports success."""

    files: dict[str, dict[str, str]] = field(default_factory=dict)
    calls: list[ToolRequested] = field(default_factory=list)

    def __call__(self, msg: ToolRequested) -> tuple[bool, Any, ErrorInfo | None]:
        self.calls.append(msg)
        fs = self.files.setdefault(msg.workspace_id or msg.task_id, {})
        args = msg.arguments
        if msg.name == "write_file":
            old = fs.get(args["path"], "") if args.get("mode") == "append" else ""
            fs[args["path"]] = old + args["content"]
            return True, {"path": args["path"], "bytes_written": len(args["content"])}, None
        if msg.name == "read_file":
            if args["path"] not in fs:
                return False, None, ErrorInfo(code="file_not_found", message=args["path"])
            return True, {"path": args["path"], "content": fs[args["path"]]}, None
        if msg.name == "execute_code":
            return True, {"exit_code": 0, "stdout": "ok\n", "stderr": "", "timed_out": False}, None
        if msg.name == "list_files":
            return (
                True,
                {"files": [{"path": p, "size": len(c)} for p, c in sorted(fs.items())]},
                None,
            )
        if msg.name == "search_files":
            found = [
                {"path": p, "line": n, "text": line}
                for p, c in sorted(fs.items())
                for n, line in enumerate(c.splitlines(), 1)
                if re.search(args["pattern"], line)
            ]
            return True, {"matches": found}, None
        if msg.name == "edit_file":
            text = fs.get(args["path"], "")
            if not 0 < text.count(args["old"]) <= args.get("count", 1):
                return False, None, ErrorInfo(code="old_text_not_found", message=args["old"])
            fs[args["path"]] = text.replace(args["old"], args["new"])
            return True, {"path": args["path"], "replacements": 1}, None
        return False, None, ErrorInfo(code="unsupported", message=f"{msg.name} not in harness")


@dataclass
class Harness:
    llm: LLM = default_llm
    tools: MemoryTools = field(default_factory=MemoryTools)
    redeliver: bool = False
    specs: dict[str, AgentSpec] = field(default_factory=lambda: dict(shipped_specs()))
    hold_llm: bool = False  # keep LLM requests queued in `held` instead of answering
    types: frozenset[str] | None = None  # the agent types a delegation may name (None: any)
    agents: dict[str, AgentState] = field(default_factory=dict)
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    workflows: dict[str, WorkflowRecord] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    llm_requests: list[LLMRequested] = field(default_factory=list)
    held: list[LLMRequested] = field(default_factory=list)
    queue: deque[tuple[str, Any]] = field(default_factory=deque)
    published: set[str] = field(default_factory=set)
    clock: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def now(self) -> datetime:
        self.clock += timedelta(milliseconds=1)
        return self.clock

    def submit(self, agent_type: str, description: str = "do it", **fields: Any) -> tuple[str, str]:
        n = next(self._ids)
        task_id, agent_id = f"task_{n}", f"agent_{n}"
        self.put(
            "task",
            SubmitTask(
                id=f"{task_id}.submit",
                task_id=task_id,
                agent_id=agent_id,
                ts=self.now(),
                agent_type=agent_type,
                description=description,
                **fields,
            ),
        )
        return task_id, agent_id

    def put(self, target: str, msg: Any) -> None:
        if msg.id in self.published:  # JetStream's duplicate window
            return
        self.published.add(msg.id)
        self.queue.append((target, msg))

    def send(self, msg: AgentInbound) -> None:
        self.put("agent", msg)

    def answer(self, agent_id: str, response: Any) -> None:
        """A human answers the agent's open request (as `POST .../human-response` does)."""
        state = self.agents[agent_id]
        request = state.open_human_request()
        assert request is not None, f"{agent_id} has no open request"
        self.send(
            HumanResponse(
                id=f"answer-{len(self.published)}",
                task_id=state.task_id,
                agent_id=agent_id,
                ts=self.now(),
                response=response,
                request_id=request.request_id,
            )
        )
        self.run()

    def release_llm(self) -> None:
        held, self.held = self.held, []
        for msg in held:
            self._answer_llm(msg)

    def run(self, limit: int = 100_000) -> None:
        for _ in range(limit):
            if not self.queue:
                return
            target, msg = self.queue.popleft()
            # Reducer inputs may be redelivered; the executor's own dedup is tested elsewhere.
            twice = self.redeliver and target in ("task", "agent")
            for _ in range(2 if twice else 1):
                self._deliver(target, msg)
        raise AssertionError("harness did not settle")

    def _deliver(self, target: str, msg: Any) -> None:
        if target == "task":
            self._task(msg)
        elif target == "agent":
            self._agent(msg)
        elif target == "llm":
            self.llm_requests.append(msg)
            if self.hold_llm:
                self.held.append(msg)
            else:
                self._answer_llm(msg)
        elif target == "workspace":
            self._workspace(msg)
        elif target == "tool":
            ok, result, error = self.tools(msg)
            self.put(
                "agent",
                ToolCompleted(
                    **msg.reply_header("harness", self.now()),
                    step=msg.step,
                    call_id=msg.call_id,
                    name=msg.name,
                    ok=ok,
                    result=result,
                    error=error,
                ),
            )

    def _workspace(self, msg: PrepareWorkspace | CommitWorkspace) -> None:
        """The executor's workspace side: ready at once, every commit a new head."""
        common = msg.reply_header("harness", self.now())
        if isinstance(msg, PrepareWorkspace):
            self.put("task", WorkspaceReady(**common, workspace_id=msg.workspace_id, base="b0"))
        else:
            head = f"h{len(self.published)}"
            self.put(
                "task",
                WorkspaceCommitted(**common, workspace_id=msg.workspace_id, run=msg.run, head=head),
            )

    def _answer_llm(self, msg: LLMRequested) -> None:
        common = {**msg.reply_header("harness", self.now()), "step": msg.step,
                  "attempt": msg.attempt}  # fmt: skip
        try:
            self.put("agent", LLMCompleted(**common, result=self.llm(msg.request)))
        except AgentOpsError as exc:
            self.put("agent", LLMFailed(**common, error=exc.info()))

    def _task(self, msg: TaskInbound) -> None:
        if msg.task_id.startswith("wf_"):
            flow = workflow.step(self.workflows.get(msg.task_id), msg, self.now())  # type: ignore[arg-type]
            if flow.state is not None:
                self.workflows[msg.task_id] = flow.state
            self._perform(flow.effects)
            return
        decision = orchestrator.step(self.tasks.get(msg.task_id), msg, self.now(), self.types)
        if decision.state is not None:
            self.tasks[msg.task_id] = decision.state
        self._perform(decision.effects)

    def _agent(self, msg: AgentInbound) -> None:
        assert msg.agent_id is not None
        state = self.agents.get(msg.agent_id)
        agent_type = state.agent_type if state else getattr(msg, "agent_type", None)
        assert agent_type is not None
        decision = agent.step(self.specs[agent_type], state, msg, self.now())
        if decision.state is not None:
            self.agents[msg.agent_id] = decision.state
        self._perform(decision.effects)

    def _perform(self, effects: tuple[Effect, ...]) -> None:
        for effect in effects:
            match effect:
                case Emit(event=event):
                    if event.id not in self.published:
                        self.published.add(event.id)
                        self.events.append(event)
                case CallLLM(message=m):
                    self.put("llm", m)
                case InvokeTool(message=m):
                    self.put("tool", m)
                case ReportToTask(message=m):
                    self.put("task", m)
                case SendToAgent(message=m):
                    self.put("agent", m)
                case ToWorkspaces(message=m):
                    self.put("workspace", m)

    # ---- queries ----
    def event_types(self, agent_id: str | None = None) -> list[str]:
        return [e.type for e in self.events if agent_id is None or e.agent_id == agent_id]
