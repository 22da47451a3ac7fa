"""Plugin tools: announced over NATS, seen live by agents, called by the tool executor.

Rules:
- A plugin is a tool served by its own process (or by the executor, from a Python package's
  `agentops.tools` entry point; see `plugin_sdk`). It announces itself by putting
  `PluginAnnouncement` JSON under its tool name in the `agentops_plugins` KV bucket, refreshes
  it every `ttl_s / 3` seconds and deletes it on a clean shutdown.
- `PluginDirectory` watches that bucket: a tool appears when announced and disappears when
  deleted or when no refresh has been seen for its `ttl_s` (its process died), without a
  restart of anything. Announcements that are malformed, shadow a builtin tool or name a
  subject other than `subjects.plugin_calls(name)` are ignored with a warning, so a plugin
  can never make the executor publish somewhere else.
- Calls go to the plugin as a core NATS request on its subject (a queue group, so replicas
  share them). Arguments are checked against the announced JSON schema first; every failure
  comes back as an `ErrorInfo` the model can read, and the plugin never sees invalid input.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import jsonschema
import structlog
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentops.bus.setup import bind_bucket
from agentops.llm.types import ToolSchema
from agentops.protocol import subjects as s
from agentops.protocol.errors import ErrorInfo
from agentops.tools.registry import BUILTIN_TOOLS, TOOL_NAME

log = structlog.get_logger(__name__)
NAME = TOOL_NAME
_ERROR_TEXT_LIMIT = 2000


class PluginAnnouncement(BaseModel):
    """What a plugin puts in the bucket (wire: unknown fields ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str = Field(pattern=NAME.pattern)
    description: str = Field(min_length=1, max_length=4000)
    parameters: dict[str, Any]
    agent_types: tuple[str, ...] = ("*",)
    subject: str
    idempotent: bool = False
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    ttl_s: float = Field(default=15.0, ge=1, le=3600)


@dataclass(frozen=True)
class PluginTool:
    announcement: PluginAnnouncement
    seen_at: float  # monotonic time of the last refresh this process saw

    @property
    def name(self) -> str:
        return self.announcement.name

    @property
    def subject(self) -> str:
        return self.announcement.subject

    @property
    def idempotent(self) -> bool:
        return self.announcement.idempotent

    @cached_property
    def schema(self) -> ToolSchema:
        """Built once per announcement: agents compare their tool list on every message."""
        a = self.announcement
        return ToolSchema(name=a.name, description=a.description, parameters=a.parameters)

    @cached_property
    def _validator(self) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator(self.announcement.parameters)

    def allowed_for(self, agent_type: str) -> bool:
        types = self.announcement.agent_types
        return "*" in types or agent_type in types

    def check_arguments(self, arguments: dict[str, Any]) -> str | None:
        """A message for the model when `arguments` do not fit the schema, else None."""
        problems = sorted(self._validator.iter_errors(arguments), key=lambda e: list(e.path))
        if not problems:
            return None
        shown = "; ".join(
            f"{'.'.join(str(p) for p in e.path) or '(arguments)'}: {e.message}"
            for e in problems[:5]
        )
        return f"invalid arguments for {self.name}: {shown}"


def parse_announcement(key: str, value: bytes) -> PluginAnnouncement | str:
    """The announcement under `key`, or why it is ignored."""
    try:
        announcement = PluginAnnouncement.model_validate_json(value)
    except ValidationError as exc:
        return f"not a plugin announcement: {exc.error_count()} problem(s)"
    if announcement.name != key:
        return f"key {key!r} does not match the tool name {announcement.name!r}"
    if announcement.name in BUILTIN_TOOLS:
        return f"{announcement.name!r} is a builtin tool"
    if announcement.subject != s.plugin_calls(announcement.name):
        return f"subject must be {s.plugin_calls(announcement.name)!r}"
    try:
        jsonschema.Draft202012Validator.check_schema(announcement.parameters)
    except jsonschema.SchemaError as exc:
        return f"parameters are not a valid JSON schema: {exc.message}"
    return announcement


class PluginDirectory:
    """The live set of plugin tools, kept from a watch of the plugins bucket."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tools: dict[str, PluginTool] = {}
        self._task: asyncio.Task[None] | None = None
        self._watcher: KeyValue.KeyWatcher | None = None
        self.ready = asyncio.Event()  # set once the bucket's current content is loaded

    async def start(self, js: JetStreamContext) -> None:
        kv = bind_bucket(js, s.PLUGINS_BUCKET)  # no stream info: a process may not see it
        self._watcher = await kv.watchall()
        self._task = asyncio.create_task(self._follow(self._watcher), name="plugin-directory")

    async def stop(self) -> None:
        if self._watcher is not None:
            with contextlib.suppress(Exception):  # the connection may already be closed
                await self._watcher.stop()  # type: ignore[no-untyped-call]
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def lookup(self, name: str) -> PluginTool | None:
        tool = self._tools.get(name)
        return tool if tool is not None and self._fresh(tool) else None

    def tools_for(self, agent_type: str) -> tuple[ToolSchema, ...]:
        return tuple(
            t.schema
            for name, t in sorted(self._tools.items())
            if self._fresh(t) and t.allowed_for(agent_type)
        )

    def names(self) -> list[str]:
        return sorted(name for name, t in self._tools.items() if self._fresh(t))

    def _fresh(self, tool: PluginTool) -> bool:
        return self._clock() - tool.seen_at <= tool.announcement.ttl_s

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:  # the bucket's current content has been delivered
                self.ready.set()
                continue
            self.apply(entry.key, entry.value, entry.operation)

    def apply(self, key: str, value: bytes | None, operation: str | None) -> None:
        """One watch update: a put (re)announces, a delete or purge removes."""
        if operation in ("DEL", "PURGE") or not value:
            if self._tools.pop(key, None) is not None:
                log.info("plugin.removed", tool=key)
            return
        parsed = parse_announcement(key, value)
        if isinstance(parsed, str):
            log.warning("plugin.ignored", key=key, reason=parsed)
            return
        if key not in self._tools:
            log.info("plugin.added", tool=key, agent_types=list(parsed.agent_types))
        self._tools[key] = PluginTool(parsed, self._clock())


async def call_plugin(
    nc: Client, tool: PluginTool, request: dict[str, Any], timeout_s: float
) -> tuple[bool, Any, ErrorInfo | None]:
    """Send one call to the plugin; (ok, result, error) for the tool result."""
    name = tool.name
    limit = min(timeout_s, tool.announcement.timeout_s)
    try:
        msg = await nc.request(tool.subject, json.dumps(request).encode(), timeout=limit)
    except NoRespondersError:
        return (
            False,
            None,
            ErrorInfo(
                code="plugin_unavailable",
                message=f"no process is serving the plugin tool {name} right now; try later or "
                "use another tool",
            ),
        )
    except (NatsTimeout, TimeoutError):
        return (
            False,
            None,
            ErrorInfo(
                code="plugin_timeout",
                message=f"the plugin tool {name} did not answer in {limit:g}s",
            ),
        )
    try:
        reply = json.loads(msg.data)
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            raise ValueError("reply is not {ok, result | error}")
    except ValueError as exc:
        return (
            False,
            None,
            ErrorInfo(
                code="plugin_bad_reply", message=f"the plugin tool {name} sent a bad reply: {exc}"
            ),
        )
    if reply["ok"]:
        return True, reply.get("result"), None
    raw = reply.get("error")
    error: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return (
        False,
        None,
        ErrorInfo(
            code=str(error.get("code") or "plugin_error")[:64],
            message=str(error.get("message") or f"the plugin tool {name} failed")[
                :_ERROR_TEXT_LIMIT
            ],
        ),
    )
