"""The tool executor process: runs tool calls in the task's workspace, at most once each.

Before a call runs it is claimed in the `agentops_tool_calls` bucket under (agent, step, call
id): only the first delivery can create the claim. A delivery that finds the claim taken does
not run a tool with side effects again; it answers `interrupted` under the reply's fixed
message id, so when the first delivery's answer was published JetStream drops this one as a
duplicate and the agent sees the real result (and an agent ignores any answer to a call it
no longer waits for). So a reply lost after its tool ran (NATS failing at that instant)
reaches the agent as `interrupted`: the side effect is never repeated. A call without side
effects (`idempotent`) is not claimed: it simply runs again. Claims written by older versions
with the result in them are answered from that result.

At start-up it reads `[tools]`, probes the sandbox (`tools.sandbox`) and logs the isolation in
force, which its status (and so `GET /health`) also shows. Builtin tools run here; a plugin
tool (`tools.plugins`) is checked against its schema and forwarded to its process under the
same claim, so a plugin's side effect is not repeated either. Tools from installed packages
(`agentops.tools` entry points) are served by this process as plugins.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import structlog
from nats.aio.client import Client
from pydantic import BaseModel, ConfigDict, TypeAdapter

from agentops.bus.auth import secret_paths
from agentops.bus.connection import publish_all
from agentops.bus.consumer import Delivery
from agentops.bus.metrics import TOOL_CALLS, TOOL_DURATION
from agentops.bus.service import Runtime, run_process
from agentops.config import load_tools
from agentops.core.state import OTHER_TOOL
from agentops.protocol import subjects as s
from agentops.protocol.errors import AgentOpsError, ErrorInfo, PermanentError
from agentops.protocol.messages import ToolCompleted, ToolRequested, WorkMessage
from agentops.services.workspaces import setup_workspaces
from agentops.store.kv import Conflict, DocumentStore
from agentops.tools.handlers import ToolContext, run_tool
from agentops.tools.plugin_sdk import load_entry_points
from agentops.tools.plugins import PluginDirectory, call_plugin
from agentops.tools.policy import ToolSettings
from agentops.tools.registry import BUILTIN_TOOLS, ToolArgsError, validate_call
from agentops.tools.sandbox import Sandbox, probe
from agentops.tools.workspace import workspace_for

log = structlog.get_logger(__name__)
PROCESS = "tool-executor"
CONCURRENCY = 16
_KEY_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ToolCallRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    state: Literal["started", "done"]
    request_id: str
    reply: ToolCompleted | None = None


RECORD_ADAPTER: TypeAdapter[ToolCallRecord] = TypeAdapter(ToolCallRecord)


def INTERRUPTED(msg: ToolRequested) -> ErrorInfo:
    return ErrorInfo(
        code="interrupted",
        message=f"the executor stopped while {msg.name} was running; it was not run again so "
        "that its side effects do not happen twice. Check the workspace and retry if needed.",
    )


def record_key(msg: ToolRequested) -> str:
    call = (
        msg.call_id
        if _KEY_SAFE.match(msg.call_id)
        else hashlib.sha256(msg.call_id.encode()).hexdigest()[:32]
    )
    return f"{msg.agent_id}.{msg.step}.{call}"


def executor_tools() -> tuple[str, ...]:
    return tuple(name for name, t in BUILTIN_TOOLS.items() if t.runs_in == "executor")


@dataclass(frozen=True)
class Executor:
    """What a call needs besides its message: where files live, how code runs, plugins."""

    data_dir: Path
    settings: ToolSettings
    sandbox: Sandbox
    plugins: PluginDirectory | None = None
    nc: Client | None = None


async def execute(msg: ToolRequested, ex: Executor) -> tuple[bool, Any, ErrorInfo | None]:
    if msg.name not in BUILTIN_TOOLS and ex.plugins is not None and ex.nc is not None:
        return await execute_plugin(msg, ex.plugins, ex.nc)
    try:
        args = validate_call(msg.name, msg.arguments, executor_tools())
    except ToolArgsError as exc:
        return False, None, ErrorInfo(code="invalid_arguments", message=str(exc))
    ctx = ToolContext(
        workspace=workspace_for(ex.data_dir, msg.workspace_id or msg.task_id),
        timeout_s=msg.timeout_s,
        sandbox=ex.sandbox,
        settings=ex.settings,
        agent_type=msg.reply_to.agent_type,
    )
    try:
        return True, await run_tool(msg.name, args, ctx), None
    except AgentOpsError as exc:
        return False, None, exc.info()
    except Exception as exc:  # a handler bug becomes a tool error the model can see
        log.exception("tool.crashed", tool=msg.name)
        return False, None, ErrorInfo(code="tool_crashed", message=f"{type(exc).__name__}: {exc}")


async def execute_plugin(
    msg: ToolRequested, plugins: PluginDirectory, nc: Client
) -> tuple[bool, Any, ErrorInfo | None]:
    tool = plugins.lookup(msg.name)
    agent_type = msg.reply_to.agent_type
    if tool is None or not tool.allowed_for(agent_type):
        names = [
            n for n in plugins.names() if (t := plugins.lookup(n)) and t.allowed_for(agent_type)
        ]
        return (
            False,
            None,
            ErrorInfo(
                code="not_found",
                message=f"unknown tool {msg.name!r}; tools here: "
                f"{', '.join([*executor_tools(), *names])}",
            ),
        )
    problem = tool.check_arguments(msg.arguments)
    if problem is not None:
        return False, None, ErrorInfo(code="invalid_arguments", message=problem)
    request = {
        "tool": msg.name, "arguments": msg.arguments, "task_id": msg.task_id,
        "agent_id": msg.agent_id, "agent_type": agent_type, "call_id": msg.call_id,
        "step": msg.step,
    }  # fmt: skip
    return await call_plugin(nc, tool, request, msg.timeout_s)


async def setup(rt: Runtime) -> None:
    store = DocumentStore[ToolCallRecord](
        rt.buckets[s.TOOL_CALLS_BUCKET],
        RECORD_ADAPTER,
        publisher=rt.publisher,
        bucket=s.TOOL_CALLS_BUCKET,
    )
    settings = load_tools(rt.settings)  # [tools], its agent type names checked
    sandbox = await asyncio.to_thread(probe, settings)
    # What sandboxed code must never see, should a bound directory contain it.
    sandbox = replace(sandbox, hidden=tuple(str(p) for p in secret_paths(rt.settings)))
    isolation = sandbox.isolation(settings.network)
    if sandbox.mode == "bwrap":
        log.info("sandbox.isolation", **isolation)
    else:  # said loudly: code runs unconfined, or not at all
        log.warning("sandbox.isolation", **isolation)
    plugins = PluginDirectory()
    await plugins.start(rt.js)
    rt.on_shutdown.append(plugins.stop)
    for plugin in load_entry_points():
        await plugin.start(rt.nc)
        rt.on_shutdown.append(plugin.stop)
    ex = Executor(Path(rt.settings.data_dir), settings, sandbox, plugins, rt.nc)
    counts = {"ok": 0, "failed": 0, "replayed": 0}

    async def reply(msg: ToolRequested, completed: ToolCompleted) -> None:
        assert msg.reply_to is not None
        mailbox = s.agent_mailbox(msg.reply_to.agent_type, msg.reply_to.agent_id, completed.type)
        await publish_all(rt.publisher, [(mailbox, completed, completed.id)])

    def completed(
        msg: ToolRequested, ok: bool, result: Any, error: ErrorInfo | None, ms: float
    ) -> ToolCompleted:
        return ToolCompleted(
            **msg.reply_header(PROCESS, datetime.now(UTC)),
            step=msg.step,
            call_id=msg.call_id,
            name=msg.name,
            ok=ok,
            result=result,
            error=error,
            duration_ms=round(ms, 3),
        )

    async def handle(msg: WorkMessage, delivery: Delivery) -> None:
        if not isinstance(msg, ToolRequested):
            raise PermanentError(f"{msg.type} is not a tool request")
        if msg.agent_id is None:
            raise PermanentError("tool request without agent_id")
        key = record_key(msg)
        try:  # claim the call: only the first delivery gets to create its record
            if not msg.idempotent:  # a call without side effects simply runs again
                await store.save(key, ToolCallRecord(state="started", request_id=msg.id), 0)
        except Conflict:
            record, _ = await store.load(key)
            if record is not None and record.reply is not None:  # an older version's record
                counts["replayed"] += 1
                await reply(msg, record.reply)
                return
            await finish(msg, completed(msg, False, None, INTERRUPTED(msg), 0.0))
            return
        started = time.perf_counter()
        ok, value, error = await execute(msg, ex)
        seconds = time.perf_counter() - started
        rt.metrics.observe(TOOL_DURATION, (tool_label(msg.name), "ok" if ok else "error"), seconds)
        await finish(msg, completed(msg, ok, value, error, seconds * 1000))

    def tool_label(name: str) -> str:
        """The tool's name when it is one this executor serves, else `other` (bounded)."""
        return name if name in BUILTIN_TOOLS or name in plugins.names() else OTHER_TOOL

    async def finish(msg: ToolRequested, result: ToolCompleted) -> None:
        counts["ok" if result.ok else "failed"] += 1
        rt.metrics.inc(TOOL_CALLS, (tool_label(msg.name), "ok" if result.ok else "error"))
        await reply(msg, result)
        # Facts for the consumer's one canonical log line of this message.
        structlog.contextvars.bind_contextvars(
            tool=msg.name, tool_ok=result.ok, tool_ms=result.duration_ms
        )

    async def give_up(msg: WorkMessage | None, _: str, info: ErrorInfo) -> None:
        """A request that cannot be handled still gets an answer, so the agent never hangs."""
        if isinstance(msg, ToolRequested) and msg.agent_id is not None:
            await reply(msg, completed(msg, False, None, info, 0.0))

    rt.status_extra = lambda: {
        "tools": list(executor_tools()),
        "plugins": plugins.names(),
        "tool_calls": dict(counts),
        "isolation": isolation,
    }
    await rt.serve_pool(
        s.TOOL_EXECUTOR_CONSUMER, s.tool_requests_filter(), handle, give_up, CONCURRENCY
    )

    await setup_workspaces(rt, ex.data_dir)


def main() -> None:
    run_process(PROCESS, "AgentOps tool executor: runs tool calls in task workspaces", setup)


if __name__ == "__main__":
    main()
