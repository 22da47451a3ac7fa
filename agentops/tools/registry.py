"""Tool definitions as data: name, description, argument model, limits, where it runs.

Pure: the core validates a model's tool call here before anything runs, and the LLM gets the
JSON schema from the same model. Handlers live only in the tool executor (`tools.handlers`).
Argument models forbid unknown fields, so an invented argument goes back to the model as an
error instead of being silently dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentops.llm.types import ToolSchema

# What a tool may be called, built-in or plugin (a plugin's announcement, an agent type's
# `plugin_tools`): lower case, it becomes a subject token.
TOOL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ToolArgs = _Args  # public name for "the validated arguments of some tool"


class ExecuteCodeArgs(_Args):
    language: Literal["python", "javascript", "bash"]
    code: str = Field(min_length=1, max_length=200_000)
    timeout: float | None = Field(default=None, gt=0, le=300, description="seconds")


class ReadFileArgs(_Args):
    path: str = Field(min_length=1, max_length=4096)


class WriteFileArgs(_Args):
    path: str = Field(min_length=1, max_length=4096)
    content: str = Field(max_length=5_000_000)
    mode: Literal["write", "append"] = "write"


class EditFileArgs(_Args):
    path: str = Field(min_length=1, max_length=4096)
    old: str = Field(min_length=1, max_length=1_000_000)
    new: str = Field(max_length=5_000_000)
    count: int = Field(default=1, ge=1, le=10_000)


class ListFilesArgs(_Args):
    path: str = Field(default=".", min_length=1, max_length=4096)
    pattern: str | None = Field(default=None, min_length=1, max_length=512)


class SearchFilesArgs(_Args):
    pattern: str = Field(min_length=1, max_length=2000)
    path: str = Field(default=".", min_length=1, max_length=4096)
    glob: str | None = Field(default=None, min_length=1, max_length=512)


class ApiCallArgs(_Args):
    url: str = Field(min_length=1, max_length=8192)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    headers: dict[str, str] | None = None
    body: Any = None


class RequestHumanInputArgs(_Args):
    question: str = Field(min_length=1, max_length=10_000)
    context: str | None = Field(default=None, max_length=50_000)
    urgency: Literal["low", "medium", "high"] = "medium"
    format: Literal["free_text", "yes_no", "multiple_choice"] = "free_text"
    choices: list[str] | None = None


class DelegateTaskArgs(_Args):
    agent_type: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str = Field(min_length=1, max_length=100_000)
    context: dict[str, Any] | None = None


class CompleteTaskArgs(_Args):
    summary: str = Field(min_length=1, max_length=50_000)
    artifacts: list[str] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ToolDef:
    name: str
    description: str
    args_model: type[_Args]
    # "executor": runs in the tool-executor process; "control": handled by the agent's reducer.
    runs_in: Literal["executor", "control"] = "executor"
    timeout_s: float = 30.0
    # Safe to run again after a crash mid-call (no side effect). Others run at most once.
    idempotent: bool = False
    requires_approval: bool = False

    def schema(self) -> ToolSchema:
        params = self.args_model.model_json_schema()
        params.pop("title", None)
        return ToolSchema(name=self.name, description=self.description, parameters=params)


BUILTIN_TOOLS: dict[str, ToolDef] = {
    t.name: t
    for t in (
        ToolDef(
            "execute_code",
            "Run a python, javascript or bash program in the task workspace and return its "
            "exit code, stdout and stderr.",
            ExecuteCodeArgs,
            timeout_s=60.0,
        ),
        ToolDef(
            "read_file",
            "Read a UTF-8 text file from the task workspace (path relative to the workspace).",
            ReadFileArgs,
            timeout_s=10.0,
            idempotent=True,
        ),
        ToolDef(
            "write_file",
            "Write or append UTF-8 text to a file in the task workspace (path relative to the "
            "workspace); parent directories are created.",
            WriteFileArgs,
            timeout_s=10.0,
        ),
        ToolDef(
            "edit_file",
            "Replace exact text `old` with `new` in a workspace file. `old` must occur, at most "
            "`count` times (default 1), and every occurrence is replaced: include enough "
            "surrounding lines to make it unique. Prefer this to rewriting a whole file.",
            EditFileArgs,
            timeout_s=10.0,
        ),
        ToolDef(
            "list_files",
            "List files (with sizes) below a workspace directory, default all. `pattern` is a "
            "glob on file names ('*.py'), or on paths below `path` when it has a '/'.",
            ListFilesArgs,
            timeout_s=10.0,
            idempotent=True,
        ),
        ToolDef(
            "search_files",
            "Search workspace text files line by line for a Python regular expression; returns "
            "path, line number and text of each match. `glob` filters files like list_files.",
            SearchFilesArgs,
            timeout_s=30.0,
            idempotent=True,
        ),
        ToolDef(
            "api_call",
            "Make an HTTP request and return status, headers and body.",
            ApiCallArgs,
            timeout_s=30.0,
        ),
        ToolDef(
            "delegate_task",
            "Hand a piece of the work to another agent type (e.g. backend_developer): it runs as "
            "a child task in this task's workspace, and its result (task_id, status, summary, "
            "artifacts, cost_usd) comes back as this call's result when it ends.",
            DelegateTaskArgs,
            runs_in="control",
        ),
        ToolDef(
            "request_human_input",
            "Ask a human a question and wait for the answer, which comes back as this call's "
            "result.",
            RequestHumanInputArgs,
            runs_in="control",
        ),
        ToolDef(
            "complete_task",
            "Finish the task with a summary of what was done and the artifacts produced.",
            CompleteTaskArgs,
            runs_in="control",
        ),
    )
}


class ToolArgsError(ValueError):
    """A tool call the model got wrong; the message is written for the model to read."""


def validate_call(name: str, arguments: dict[str, Any], allowed: tuple[str, ...]) -> _Args:
    tool = BUILTIN_TOOLS.get(name)
    if tool is None or name not in allowed:
        raise ToolArgsError(f"unknown tool {name!r}; available tools: {', '.join(sorted(allowed))}")
    try:
        return tool.args_model.model_validate(arguments)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(arguments)'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise ToolArgsError(f"invalid arguments for {name}: {problems}") from None


def is_idempotent(name: str, args: _Args) -> bool:
    """Safe to run again after a crash mid-call: reads, and writes that replace a whole file."""
    if isinstance(args, WriteFileArgs):
        return args.mode == "write"
    tool = BUILTIN_TOOLS.get(name)
    return tool is not None and tool.idempotent


def schemas_for(allowed: tuple[str, ...]) -> tuple[ToolSchema, ...]:
    return tuple(BUILTIN_TOOLS[name].schema() for name in allowed if name in BUILTIN_TOOLS)
