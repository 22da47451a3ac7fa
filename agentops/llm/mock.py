"""The deterministic mock LLM: the default provider, and the tool tests steer runs with.

Rules:
- `mock_reply(request)` is pure: no clock, no I/O, no randomness. The reply depends only on
  `request.metadata` (`agent_type`, `call_index`, `mock`), the first user message, the names
  of the tools offered and the model name, so a replayed call gets the same answer and a test
  can predict every step.
- `call_index` counts this agent's earlier LLM calls, failed ones included, so a scripted
  error is consumed like any other entry and the retry reads the next one. A follow-up run
  plays its own script (or the plan) from its start: `run_call_index` counts the run's calls.
- With a script (`context.mock`, validated by `MockScript`), entry `call_index` decides the
  reply: a tool call (arguments passed through unvalidated, so invalid ones reach the agent),
  several tool calls, text, or a raised `MockLLMError`. After the last entry it always calls
  `complete_task`, with the files the script wrote as artifacts. A script that does not
  validate fails the call permanently (`bad_mock_script`).
- Without a script (`mock` absent, or a mock with only `delay_ms`) it plays the agent type's
  default plan from `mock_plans`, one tool call per LLM call; past the plan it calls
  `complete_task` again. A type without a plan of its own plays the generic run
  (`mock_plans.generic_plan`), built from the tools the request offers. `{"script": []}`
  completes at once.
- Tool call ids are `call_<call_index>_<i>`: unique within an agent's thread and stable
  across replays.
- Usage is the system's token estimate (`llm/tokens.py`): input tokens are the estimate the
  agent put in `metadata.estimated_input_tokens` (or, without it, the estimate of the
  request), output tokens the estimate of the reply; cost is zero.
- `MockProvider` is the thin shell: it sleeps `delay_ms` (the only effect) and stamps the
  latency.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal, assert_never

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from agentops.llm.mock_plans import default_plan, generic_plan, task_line
from agentops.llm.mock_team import summary_step, tech_lead_plan
from agentops.llm.tokens import MESSAGE_OVERHEAD, estimate_request_tokens, message_tokens
from agentops.llm.types import LLMRequest, LLMResult, Message, ToolCall, Usage
from agentops.protocol.errors import AgentOpsError, ErrorInfo

PROVIDER = "mock"
TECH_LEAD = "tech_lead"
MAX_SCRIPT_ENTRIES = 1000
MAX_DELAY_MS = 60_000


class MockLLMError(AgentOpsError):
    """A failed mock LLM call; carries the `ErrorInfo` that crosses process boundaries."""

    code = "mock_error"

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message, code=info.code, details=info.details)
        self.retryable = info.retryable
        self._info = info

    def info(self) -> ErrorInfo:
        return self._info


# ---- the script a task's `context.mock` carries ----
class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolEntry(_Entry):
    """Reply with one tool call."""

    tool: str = Field(min_length=1, max_length=128)
    args: dict[str, Any] = Field(default_factory=dict)


class ToolsEntry(_Entry):
    """Reply with several tool calls at once (parallel tool calls)."""

    tools: tuple[ToolEntry, ...] = Field(min_length=1, max_length=32)


class ErrorEntry(_Entry):
    """Fail this LLM call with a retryable provider error."""

    error: Literal["timeout", "rate_limit", "server"]


class TextEntry(_Entry):
    """Reply with text and no tool call."""

    text: str = Field(max_length=100_000)


_ENTRY_MODELS: dict[str, type[_Entry]] = {
    "tool": ToolEntry,
    "tools": ToolsEntry,
    "error": ErrorEntry,
    "text": TextEntry,
}

_KINDS = tuple(_ENTRY_MODELS)
_ENTRY_SHAPES = (
    'each script entry must have exactly one of these shapes: {"tool": NAME, "args": {...}}, '
    '{"tools": [{"tool": NAME, "args": {...}}, ...]}, '
    '{"error": "timeout"|"rate_limit"|"server"}, {"text": "..."}'
)


def _entry_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        present = [kind for kind in _KINDS if kind in value]
        # None when zero or several kinds are present: the custom error below says why.
        return present[0] if len(present) == 1 else None
    for kind, model in _ENTRY_MODELS.items():
        if isinstance(value, model):
            return kind
    return None


ScriptEntry = Annotated[
    Annotated[ToolEntry, Tag("tool")]
    | Annotated[ToolsEntry, Tag("tools")]
    | Annotated[ErrorEntry, Tag("error")]
    | Annotated[TextEntry, Tag("text")],
    Discriminator(
        _entry_kind, custom_error_type="invalid_script_entry", custom_error_message=_ENTRY_SHAPES
    ),
]


class MockScript(BaseModel):
    """A task's `context.mock`: one script entry per LLM call, and an optional delay."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # None: play the agent type's default plan (a mock may set only `delay_ms`).
    script: tuple[ScriptEntry, ...] | None = Field(default=None, max_length=MAX_SCRIPT_ENTRIES)
    delay_ms: int = Field(default=0, ge=0, le=MAX_DELAY_MS, strict=True)


def describe_script_errors(exc: ValidationError) -> str:
    """One line naming each problem by its place in the script, e.g. `script[2].args: ...`."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        # Drop the union tag pydantic puts after an entry index: it repeats the entry kind.
        if len(loc) > 2 and loc[0] == "script" and isinstance(loc[1], int) and loc[2] in _KINDS:
            del loc[2]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        problems.append(f"{where or 'mock'}: {err['msg']}")
    return "; ".join(problems)


# ---- the pure reply ----
def mock_reply(request: LLMRequest) -> LLMResult:
    """The mock's reply to `request`; raises `MockLLMError` for scripted or bad-input errors."""
    meta = request.metadata
    call_index = _call_index(meta)
    # The position in the run's script or plan; a follow-up run starts its own at 0.
    position = _call_index(meta, "run_call_index") if "run_call_index" in meta else call_index
    mock = _parse_mock(meta)
    if mock is not None and mock.script is not None:
        return _scripted(request, mock.script, call_index, position)
    raw_type = meta.get("agent_type")
    agent_type = raw_type if isinstance(raw_type, str) else ""
    task = _task(request)
    if agent_type == TECH_LEAD:  # delegates, then sums up what came back (`mock_team`)
        team = tech_lead_plan(task)
        name, args = team[position] if position < len(team) else summary_step(request.messages)
        return _result(
            request, "", (ToolCall(id=_call_id(call_index, 0), name=name, arguments=args),)
        )
    plan = default_plan(agent_type, task) or generic_plan(
        agent_type, task, {t.name for t in request.tools}
    )
    # Past the plan: complete_task again (a plan ends with it).
    name, args = plan[min(position, len(plan) - 1)]
    return _result(request, "", (ToolCall(id=_call_id(call_index, 0), name=name, arguments=args),))


def _scripted(
    request: LLMRequest, script: tuple[ScriptEntry, ...], call_index: int, position: int
) -> LLMResult:
    if position >= len(script):
        steps = len(script)
        completion = ToolCall(
            id=_call_id(call_index, 0),
            name="complete_task",
            arguments={
                "summary": f"Completed the scripted run ({steps} scripted "
                f"step{'' if steps == 1 else 's'})",
                "artifacts": _written_paths(script),
            },
        )
        return _result(request, "", (completion,))
    entry = script[position]
    match entry:
        case ToolEntry():
            return _result(request, "", (_tool_call(entry, call_index, 0),))
        case ToolsEntry():
            calls = tuple(_tool_call(t, call_index, i) for i, t in enumerate(entry.tools))
            return _result(request, "", calls)
        case TextEntry():
            return _result(request, entry.text, ())
        case ErrorEntry():
            raise MockLLMError(_scripted_error(entry.error, call_index))
        case _:
            assert_never(entry)


def _scripted_error(kind: str, call_index: int) -> ErrorInfo:
    code, what = {
        "timeout": ("timeout", "the request timed out"),
        "rate_limit": ("rate_limit", "rate limit exceeded, retry after a pause"),
        "server": ("server_error", "the provider returned a server error"),
    }[kind]
    return ErrorInfo(
        code=code,
        message=f"mock LLM: {what} (scripted at call {call_index})",
        retryable=True,
    )


def _tool_call(entry: ToolEntry, call_index: int, i: int) -> ToolCall:
    return ToolCall(id=_call_id(call_index, i), name=entry.tool, arguments=entry.args)


def _call_id(call_index: int, i: int) -> str:
    return f"call_{call_index}_{i}"


def _written_paths(script: tuple[ScriptEntry, ...]) -> list[str]:
    """Paths the script's write_file calls name, first occurrence order, no duplicates."""
    seen: dict[str, None] = {}
    for entry in script:
        calls = entry.tools if isinstance(entry, ToolsEntry) else (entry,)
        for call in calls:
            if isinstance(call, ToolEntry) and call.tool == "write_file":
                path = call.args.get("path")
                if isinstance(path, str) and path:
                    seen.setdefault(path, None)
    return list(seen)


def _call_index(meta: dict[str, Any], key: str = "call_index") -> int:
    value = meta.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MockLLMError(
            ErrorInfo(
                code="bad_request",
                message=f"mock LLM: metadata.{key} must be an int >= 0, got {value!r}",
            )
        )
    return value


# The last script seen per task: every call of a task carries the same script, and checking
# that it is still the same (a dict comparison) costs far less than validating it again.
_SCRIPTS: dict[str, tuple[Any, MockScript]] = {}
_SCRIPTS_LIMIT = 4096


def _parse_mock(meta: dict[str, Any]) -> MockScript | None:
    raw = meta.get("mock")
    if raw is None:
        return None
    task_id = meta.get("task_id")
    key = task_id if isinstance(task_id, str) else None
    seen = _SCRIPTS.get(key) if key else None
    if seen is not None and (seen[0] is raw or seen[0] == raw):
        return seen[1]
    try:
        script = MockScript.model_validate(raw)
    except ValidationError as exc:
        raise MockLLMError(
            ErrorInfo(
                code="bad_mock_script",
                message=f"invalid context.mock: {describe_script_errors(exc)}",
                retryable=False,
            )
        ) from None
    if key:
        if len(_SCRIPTS) >= _SCRIPTS_LIMIT:
            del _SCRIPTS[next(iter(_SCRIPTS))]
        _SCRIPTS[key] = (raw, script)
    return script


def _task(request: LLMRequest) -> str:
    first_user = next((m for m in request.messages if m.role == "user"), None)
    if first_user is None:
        return ""
    # The rendered prompt opens with "Task: <description>" (core/render.py).
    return task_line(first_user.content.removeprefix("Task: "))


def _result(request: LLMRequest, text: str, calls: tuple[ToolCall, ...]) -> LLMResult:
    # The system's one token estimate (llm/tokens.py). The agent already estimated its request
    # while fitting it to the window; recounting a long conversation here would cost more
    # than the whole mock reply.
    estimated = request.metadata.get("estimated_input_tokens")
    if isinstance(estimated, bool) or not isinstance(estimated, int) or estimated < 0:
        estimated = estimate_request_tokens(request)
    reply = Message(role="assistant", content=text, tool_calls=calls)
    usage = Usage(
        input_tokens=estimated,
        output_tokens=message_tokens(reply) - MESSAGE_OVERHEAD,
        cost_usd=0.0,
    )
    return LLMResult(
        text=text,
        tool_calls=calls,
        usage=usage,
        model=request.model,
        provider=PROVIDER,
        finish_reason="tool_calls" if calls else "stop",
    )


# ---- the thin shell ----
class MockProvider:
    """The `mock` provider: `mock_reply` after the script's `delay_ms`."""

    name = PROVIDER

    async def complete(self, request: LLMRequest) -> LLMResult:
        started = time.monotonic()
        delay_ms = _delay_ms(request.metadata)
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        result = mock_reply(request)
        latency_ms = round((time.monotonic() - started) * 1000, 3)
        return result.model_copy(update={"latency_ms": latency_ms})


def _delay_ms(meta: dict[str, Any]) -> int:
    # A bad script is reported by mock_reply; here it just means no delay.
    try:
        script = _parse_mock(meta)
    except MockLLMError:
        return 0
    return script.delay_ms if script is not None else 0
