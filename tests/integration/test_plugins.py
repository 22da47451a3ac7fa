"""Plugin tools against a real nats-server: the example plugin process announces its tool,
a directory sees it live, the executor forwards calls to it, and it disappears when the
process goes away (at once on a clean stop, within its TTL after kill -9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from agentops.bus.connection import MSG_ID, encode
from agentops.bus.service import Runtime
from agentops.bus.setup import ensure_jetstream
from agentops.config import load_settings
from agentops.natsserver import NatsServer
from agentops.protocol import subjects as s
from agentops.protocol.messages import ReplyTo, ToolRequested
from agentops.services import tool_executor
from agentops.tools.plugin_sdk import Plugin, load_entry_points
from agentops.tools.plugins import PluginDirectory
from tests.helpers import until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plugins" / "word_count.py"
AGENT = "agent_p"


def request(call_id: str, arguments: dict[str, Any], name: str = "word_count") -> ToolRequested:
    return ToolRequested(
        id=f"{AGENT}.tool1.{call_id}", task_id="task_p", agent_id=AGENT, ts=datetime.now(UTC),
        step=1, call_id=call_id, name=name, arguments=arguments,
        reply_to=ReplyTo(agent_type="backend_developer", agent_id=AGENT), timeout_s=10,
    )  # fmt: skip


async def send(nc: Client, msg: ToolRequested) -> None:
    await nc.jetstream().publish(s.tool_requests(msg.name), encode(msg), headers={MSG_ID: msg.id})


async def start_executor(nc: Client, data_dir: Path) -> tuple[Runtime, dict[str, dict[str, Any]]]:
    js = nc.jetstream()
    rt = Runtime(
        process="tool-executor", settings=load_settings(data_dir=data_dir), nc=nc, js=js,
        buckets=await ensure_jetstream(js),
    )  # fmt: skip
    replies: dict[str, dict[str, Any]] = {}

    async def on_reply(msg: Any) -> None:
        doc = json.loads(msg.data)
        replies[doc["call_id"]] = doc

    await nc.subscribe(s.agent_mailbox_filter("backend_developer", AGENT), cb=on_reply)
    await tool_executor.setup(rt)
    return rt, replies


async def stop(rt: Runtime) -> None:
    for consumer in rt.consumers:
        await consumer.stop()
    for hook in rt.on_shutdown:
        await hook()


@pytest.fixture
def plugin_process(nats_server: NatsServer, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "NATS_URL": nats_server.url, "AGENTOPS_PLUGIN_TTL_S": "2"}
    log = (tmp_path / "plugin.log").open("wb")
    proc = subprocess.Popen([sys.executable, str(EXAMPLE)], env=env, stdout=log, stderr=log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()


async def test_plugin_process_is_seen_called_and_gone_after_kill(
    nc: Client, tmp_path: Path, plugin_process: subprocess.Popen[bytes]
) -> None:
    """Announce → listed for agents → executor forwards a call → kill -9 → gone within TTL."""
    await ensure_jetstream(nc.jetstream())
    directory = PluginDirectory()  # what an agent process runs
    await directory.start(nc.jetstream())
    rt, replies = await start_executor(nc, tmp_path)
    try:
        await until(lambda: directory.lookup("word_count") is not None, what="announcement")
        names = [t.name for t in directory.tools_for("backend_developer")]
        assert names == ["word_count"]
        schema = directory.tools_for("devops_engineer")[0]
        assert schema.parameters["required"] == ["text"]
        assert directory.lookup("word_count").idempotent is True  # type: ignore[union-attr]

        await until(lambda: "word_count" in rt.status()["plugins"], what="executor sees it")
        await send(nc, request("c1", {"text": "the cat and the hat\nthe end", "top": 1}))
        await send(nc, request("c2", {"text": 42}))
        await send(nc, request("c3", {"text": "   "}))
        await until(lambda: len(replies) == 3, what="three replies")
        assert replies["c1"]["ok"] is True
        assert replies["c1"]["result"] == {
            "lines": 2, "words": 7, "characters": 27, "top_words": [["the", 3]],
        }  # fmt: skip
        assert replies["c2"]["error"]["code"] == "invalid_arguments"
        assert "text: 42 is not of type 'string'" in replies["c2"]["error"]["message"]
        assert replies["c3"]["error"] == {
            "code": "empty_text", "message": "text is empty; pass the text to count",
            "retryable": False, "details": None,
        }  # fmt: skip

        plugin_process.send_signal(signal.SIGKILL)
        plugin_process.wait()
        killed = time.monotonic()
        await until(lambda: directory.lookup("word_count") is None, timeout=10, what="expiry")
        assert time.monotonic() - killed <= 2 + 1.0  # the TTL, plus one refresh period
        assert directory.tools_for("backend_developer") == ()
        await until(lambda: rt.status()["plugins"] == [], what="executor forgets it")
        await send(nc, request("c4", {"text": "late"}))
        await until(lambda: "c4" in replies, what="reply to a call for a gone plugin")
        assert replies["c4"]["error"]["code"] == "not_found"
    finally:
        await directory.stop()
        await stop(rt)


async def test_clean_stop_withdraws_the_tool_at_once(
    nc: Client, plugin_process: subprocess.Popen[bytes]
) -> None:
    """SIGTERM: the plugin deletes its announcement and agents stop seeing it immediately."""
    await ensure_jetstream(nc.jetstream())
    directory = PluginDirectory()
    await directory.start(nc.jetstream())
    try:
        await until(lambda: directory.lookup("word_count") is not None, what="announcement")
        plugin_process.send_signal(signal.SIGTERM)
        assert plugin_process.wait(timeout=10) == 0
        # Withdrawn by a delete: no waiting for the TTL (2 s) to pass.
        await until(lambda: directory.lookup("word_count") is None, timeout=1.5, what="delete")
    finally:
        await directory.stop()


async def test_bad_announcements_are_ignored(nc: Client) -> None:
    """Malformed JSON, a builtin's name or a foreign subject never become tools."""
    js = nc.jetstream()
    buckets = await ensure_jetstream(js)
    kv = buckets[s.PLUGINS_BUCKET]
    good = Plugin("echo_back", "Echo.", {"type": "object"}).announcement
    await kv.put("broken", b"{not json")
    await kv.put(
        "read_file", good.model_copy(update={"name": "read_file"}).model_dump_json().encode()
    )
    await kv.put(
        "sneaky",
        good.model_copy(update={"name": "sneaky", "subject": s.task_inbox("t1", "task.submit")})
        .model_dump_json()
        .encode(),
    )
    await kv.put("echo_back", good.model_dump_json().encode())
    directory = PluginDirectory()
    await directory.start(js)
    try:
        await until(lambda: directory.ready.is_set(), what="initial load")
        assert directory.names() == ["echo_back"]
    finally:
        await directory.stop()


ENTRY_MODULE = """
from agentops.tools.plugin_sdk import Plugin

async def _reverse(arguments, call):
    return {"text": arguments["text"][::-1], "agent_type": call.agent_type}

TOOL = Plugin(
    "reverse_text", "Reverse a text.",
    {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    agent_types=("backend_developer",), handler=_reverse,
)
"""


async def test_entry_point_tools_are_served_by_the_executor(
    nc: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An `agentops.tools` entry point is a tool the executor serves, only to the types it names."""
    site = tmp_path / "site"
    dist = site / "reverse_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: reverse-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[agentops.tools]\nreverse = reverse_plugin:TOOL\n")
    (site / "reverse_plugin.py").write_text(ENTRY_MODULE)
    monkeypatch.syspath_prepend(str(site))
    assert [p.name for p in load_entry_points()] == ["reverse_text"]

    directory = PluginDirectory()
    await ensure_jetstream(nc.jetstream())
    await directory.start(nc.jetstream())
    rt, replies = await start_executor(nc, tmp_path)
    stopped = False
    try:
        await until(lambda: directory.lookup("reverse_text") is not None, what="announcement")
        assert [t.name for t in directory.tools_for("backend_developer")] == ["reverse_text"]
        assert directory.tools_for("frontend_developer") == ()
        await send(nc, request("e1", {"text": "abc"}, name="reverse_text"))
        await until(lambda: "e1" in replies, what="reply")
        assert replies["e1"]["result"] == {"text": "cba", "agent_type": "backend_developer"}
        await stop(rt)
        stopped = True
        # A stopping executor withdraws the tools it served.
        await until(lambda: directory.lookup("reverse_text") is None, timeout=2, what="withdrawal")
    finally:
        if not stopped:
            await stop(rt)
        await directory.stop()
