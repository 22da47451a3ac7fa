"""Write a plugin tool in a few lines: describe it, write one async handler, run it.

    from agentops.tools.plugin_sdk import Plugin, PluginCall

    plugin = Plugin(
        name="shout",
        description="Upper-case a text.",
        parameters={"type": "object", "properties": {"text": {"type": "string"}},
                    "required": ["text"], "additionalProperties": False},
    )

    @plugin.handler
    async def shout(arguments: dict, call: PluginCall) -> dict:
        return {"text": arguments["text"].upper()}

    if __name__ == "__main__":
        plugin.run()          # NATS_URL from the environment; Ctrl-C/SIGTERM to stop

Rules:
- `serve(nc)` subscribes to `subjects.plugin_calls(name)` in a queue group (replicas share the
  calls), announces the tool in the plugins bucket, refreshes the announcement every
  `ttl_s / 3` seconds and deletes it when stopped. A process that dies without stopping
  stops refreshing, and agents stop seeing the tool after `ttl_s`.
- The executor has already checked the arguments against `parameters`. The handler returns
  any JSON-able value; raising `PluginError(message, code=...)` sends the model that error,
  and any other exception becomes `plugin_crashed` (logged here, never fatal).
- The same `Plugin` object, exposed by a package under the `agentops.tools` entry-point
  group, is served by the tool executor itself (`load_entry_points`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue

from agentops.bus.auth import Auth, nats_auth
from agentops.bus.connection import CredentialRefused, connect
from agentops.bus.setup import bind_bucket
from agentops.config import load_settings
from agentops.logging import configure_logging
from agentops.protocol import subjects as s
from agentops.protocol.errors import AgentOpsError, ConfigError
from agentops.tools.plugins import PluginAnnouncement

log = structlog.get_logger(__name__)
ENTRY_POINT_GROUP = "agentops.tools"
TTL_ENV = "AGENTOPS_PLUGIN_TTL_S"


class PluginError(AgentOpsError):
    """A failure the model should read (bad input for this tool, nothing found, ...)."""

    code = "plugin_error"


@dataclass(frozen=True, slots=True)
class PluginCall:
    """Who is calling: for logs and per-task behaviour. Plugins share no files with agents."""

    task_id: str
    agent_id: str
    agent_type: str
    call_id: str
    step: int


Handler = Callable[[dict[str, Any], PluginCall], Awaitable[Any]]


class Plugin:
    def __init__(
        self,
        name: str,
        description: str,
        parameters: dict[str, Any],
        *,
        agent_types: tuple[str, ...] = ("*",),
        idempotent: bool = False,
        timeout_s: float = 30.0,
        ttl_s: float = 15.0,
        handler: Handler | None = None,
    ) -> None:
        self.announcement = PluginAnnouncement(
            name=name, description=description, parameters=parameters,
            agent_types=agent_types, subject=s.plugin_calls(name), idempotent=idempotent,
            timeout_s=timeout_s, ttl_s=ttl_s,
        )  # fmt: skip
        self._handler = handler
        self._sub: Subscription | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._kv: KeyValue | None = None

    @property
    def name(self) -> str:
        return self.announcement.name

    def handler(self, fn: Handler) -> Handler:
        """Decorator: the function that serves this tool's calls."""
        self._handler = fn
        return fn

    async def handle(self, data: bytes) -> dict[str, Any]:
        """One call: request JSON in, `{ok, result | error}` out. Never raises."""
        try:
            request = json.loads(data)
            call = PluginCall(
                task_id=str(request.get("task_id", "")),
                agent_id=str(request.get("agent_id", "")),
                agent_type=str(request.get("agent_type", "")),
                call_id=str(request.get("call_id", "")),
                step=int(request.get("step", 0)),
            )
            arguments = request.get("arguments")
            if not isinstance(arguments, dict):
                raise PluginError("arguments must be an object", code="invalid_arguments")
            if self._handler is None:
                raise PluginError(f"plugin {self.name} has no handler", code="plugin_error")
            return {"ok": True, "result": await self._handler(arguments, call)}
        except AgentOpsError as exc:
            return {"ok": False, "error": {"code": exc.code, "message": exc.message}}
        except (ValueError, TypeError) as exc:
            return {"ok": False, "error": {"code": "invalid_request", "message": str(exc)}}
        except Exception as exc:
            log.exception("plugin.crashed", tool=self.name)
            error = {"code": "plugin_crashed", "message": f"{type(exc).__name__}: {exc}"}
            return {"ok": False, "error": error}

    async def start(self, nc: Client) -> None:
        """Serve calls and announce the tool (refreshed until `stop`)."""

        async def on_call(msg: Msg) -> None:
            reply = await self.handle(msg.data)
            with contextlib.suppress(Exception):  # the caller may have given up
                await msg.respond(json.dumps(reply, default=str).encode())

        self._sub = await nc.subscribe(self.announcement.subject, queue=s.PLUGIN_QUEUE, cb=on_call)
        self._kv = bind_bucket(nc.jetstream(), s.PLUGINS_BUCKET)  # its stream info is denied
        await self._announce()
        self._refresh = asyncio.create_task(self._keep_announcing(), name=f"plugin-{self.name}")

    async def stop(self) -> None:
        """Withdraw the announcement (agents stop seeing the tool at once), stop serving."""
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
        if self._kv is not None:
            with contextlib.suppress(Exception):  # best effort: the TTL covers a failure
                await self._kv.delete(self.name)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _announce(self) -> None:
        assert self._kv is not None
        await self._kv.put(self.name, self.announcement.model_dump_json().encode())

    async def _keep_announcing(self) -> None:
        while True:
            await asyncio.sleep(self.announcement.ttl_s / 3)  # the refresh period itself
            try:
                await self._announce()
            except Exception as exc:  # NATS briefly away: try again next period
                log.warning("plugin.announce_failed", tool=self.name, error=str(exc))

    def run(self) -> None:
        """Run as a process: connect to NATS_URL, serve until SIGINT/SIGTERM, withdraw.

        It authenticates as `bus/auth.py` says for the user `plugin-<name>`: NATS_CREDS,
        NATS_NKEY_SEED, a user in NATS_URL, or its credential in the data dir
        (AGENTOPS_DATA_DIR, made by `agentops init --plugin <name>`).
        AGENTOPS_PLUGIN_TTL_S overrides the announcement's TTL (how soon a killed process's
        tool disappears)."""
        ttl = os.environ.get(TTL_ENV, "").strip()
        if ttl:
            self.announcement = self.announcement.model_copy(update={"ttl_s": float(ttl)})
        process = s.plugin_process(self.name)
        configure_logging(process, "info", "auto")
        try:
            settings = load_settings()
        except ConfigError as exc:
            raise SystemExit(f"error: {exc.message}") from None
        auth = nats_auth(settings, process)
        try:
            asyncio.run(self._main(settings.effective_nats_url, auth))
        except CredentialRefused:
            raise SystemExit(
                f"error: NATS refused the credential of {process} ({auth.describe()}): make one "
                f"with `agentops init --plugin {self.name}` and set AGENTOPS_DATA_DIR"
            ) from None

    async def _main(self, url: str, auth: Auth) -> None:
        process = s.plugin_process(self.name)
        nc = await connect(url, process, auth, inbox_prefix=s.inbox_prefix(process))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start(nc)
        log.info("plugin.serving", tool=self.name, subject=self.announcement.subject)
        await stop.wait()
        await self.stop()
        await nc.drain()


def load_entry_points() -> list[Plugin]:
    """The `Plugin` objects installed packages expose under the `agentops.tools` group."""
    found: list[Plugin] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken package must not stop the executor
            log.error("plugin.entry_point_failed", entry_point=ep.name, error=str(exc))
            continue
        if isinstance(obj, Plugin):
            found.append(obj)
        else:
            log.error(
                "plugin.entry_point_not_a_plugin", entry_point=ep.name, got=type(obj).__name__
            )
    return found
