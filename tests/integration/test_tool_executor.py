"""The tool executor against a real nats-server: each call runs at most once."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from agentops.bus.connection import MSG_ID, encode
from agentops.bus.service import Runtime, register_micro
from agentops.bus.setup import ensure_jetstream
from agentops.config import load_settings
from agentops.edge.health import executor_isolation
from agentops.protocol import subjects as s
from agentops.protocol.messages import ReplyTo, ToolRequested
from agentops.services import tool_calls, tool_executor
from agentops.store.kv import DocumentStore
from tests.helpers import until

pytestmark = pytest.mark.integration


def request(call_id: str, mode: str = "append", content: str = "once\n") -> ToolRequested:
    return ToolRequested(
        id=f"agent_x.tool1.{call_id}", task_id="task_x", agent_id="agent_x",
        ts=datetime.now(UTC), step=1, call_id=call_id, name="write_file",
        arguments={"path": "out.txt", "content": content, "mode": mode},
        reply_to=ReplyTo(agent_type="backend_developer", agent_id="agent_x"),
        idempotent=mode == "write",
    )  # fmt: skip


async def start_executor(
    nc: Client, data_dir: Path, config_file: Path | None = None
) -> tuple[Runtime, list[dict[str, Any]]]:
    js = nc.jetstream()
    settings = load_settings(data_dir=data_dir, config_file=config_file)
    rt = Runtime(
        process="tool-executor", settings=settings, nc=nc, js=js,
        buckets=await ensure_jetstream(js),
    )  # fmt: skip
    replies: list[dict[str, Any]] = []

    async def on_reply(msg: Any) -> None:
        replies.append(json.loads(msg.data))

    await nc.subscribe(s.agent_mailbox_filter("backend_developer", "agent_x"), cb=on_reply)
    await tool_executor.setup(rt)
    return rt, replies


async def send_as_redelivery(nc: Client, msg: ToolRequested, n: int) -> None:
    """A fresh publish id makes JetStream deliver it again, as a redelivery would."""
    await nc.jetstream().publish(
        s.tool_requests(msg.name), encode(msg), headers={MSG_ID: f"{msg.id}#{n}"}
    )


async def test_redelivered_call_does_not_run_again_and_the_agent_gets_one_answer(
    nc: Client, tmp_path: Path
) -> None:
    """A call delivered twice appends once, and the agent keeps one answer: the real result."""
    # The second delivery's answer carries the same message id, so the agent's mailbox keeps
    # only the first.
    rt, replies = await start_executor(nc, tmp_path)
    msg = request("c1")
    await send_as_redelivery(nc, msg, 1)
    await until(lambda: len(replies) == 1, what="first reply")
    await send_as_redelivery(nc, msg, 2)
    await until(lambda: len(replies) == 2, what="second reply")
    assert replies[0]["ok"] is True and replies[0]["id"] == replies[1]["id"]
    assert (tmp_path / "workspaces" / "task_x" / "out.txt").read_text() == "once\n"
    mailbox = s.agent_mailbox("backend_developer", "agent_x", "tool.completed")
    stored = await nc.jetstream().get_last_msg(s.WORK_STREAM, mailbox)
    assert stored.seq is not None and json.loads(stored.data or b"{}") == replies[0]
    info = await nc.jetstream().stream_info(s.WORK_STREAM, subjects_filter=mailbox)
    assert info.state.subjects == {mailbox: 1}
    for consumer in rt.consumers:
        await consumer.stop()


async def test_call_interrupted_mid_run_is_not_run_again(nc: Client, tmp_path: Path) -> None:
    """A side-effecting call claimed before a crash answers `interrupted` and does not run."""
    rt, replies = await start_executor(nc, tmp_path)
    store = DocumentStore(rt.buckets[s.TOOL_CALLS_BUCKET], tool_calls.RECORD_ADAPTER)
    append, rewrite = request("c2"), request("c3", mode="write", content="whole\n")
    for msg in (append, rewrite):  # what a crash between claim and result leaves behind
        claimed = tool_calls.ToolCallRecord(state="started", request_id=msg.id)
        await store.save(tool_calls.record_key(msg), claimed, 0)
        await send_as_redelivery(nc, msg, 1)
    await until(lambda: len(replies) == 2, what="two replies")
    by_call = {r["call_id"]: r for r in replies}
    assert by_call["c2"]["ok"] is False and by_call["c2"]["error"]["code"] == "interrupted"
    assert by_call["c3"]["ok"] is True  # replacing a whole file is safe to repeat
    assert (tmp_path / "workspaces" / "task_x" / "out.txt").read_text() == "whole\n"
    for consumer in rt.consumers:
        await consumer.stop()


async def test_a_call_without_side_effects_runs_without_a_claim(nc: Client, tmp_path: Path) -> None:
    """A whole-file rewrite runs on each delivery with no claim; an append is claimed first."""
    # Rewriting a whole file is safe to repeat; an append is not.
    rt, replies = await start_executor(nc, tmp_path)
    store = DocumentStore(rt.buckets[s.TOOL_CALLS_BUCKET], tool_calls.RECORD_ADAPTER)
    rewrite, append = request("c6", mode="write", content="whole\n"), request("c7")
    for n, msg in enumerate((rewrite, rewrite, append)):
        await send_as_redelivery(nc, msg, n)
        await until(lambda n=n: len(replies) == n + 1, what=f"reply {n + 1}")
    assert [r["ok"] for r in replies] == [True, True, True]
    assert (await store.load(tool_calls.record_key(rewrite)))[0] is None
    assert (await store.load(tool_calls.record_key(append)))[0] is not None
    for consumer in rt.consumers:
        await consumer.stop()


async def test_invalid_arguments_from_a_request_are_an_error_reply(
    nc: Client, tmp_path: Path
) -> None:
    """The executor re-validates arguments: a bad call gets an error reply, nothing runs."""
    _, replies = await start_executor(nc, tmp_path)
    bad = request("c4").model_copy(update={"arguments": {"path": "/etc/passwd"}})
    await send_as_redelivery(nc, bad, 1)
    await until(lambda: len(replies) == 1, what="reply")
    assert replies[0]["ok"] is False and replies[0]["error"]["code"] == "invalid_arguments"


async def test_isolation_is_in_the_status_that_health_reads(nc: Client, tmp_path: Path) -> None:
    """The executor's status endpoint reports the sandbox in force; /health's reader gets it."""
    rt, _ = await start_executor(nc, tmp_path)
    micro = await register_micro(rt, "tool executor under test")
    try:
        isolation = await executor_isolation(nc, 2.0)
        assert isolation is not None
        expected = "bwrap" if shutil.which("bwrap") else "refused"
        assert isolation["mode"] == expected
        assert isolation["limits"]["output_bytes"] == 64 * 1024
        if expected == "refused":
            assert "execute_code is refused" in isolation["reason"]
    finally:
        await micro.stop()
        for consumer in rt.consumers:
            await consumer.stop()


async def test_code_runs_sandboxed_through_the_executor(nc: Client, tmp_path: Path) -> None:
    """An execute_code request runs in the sandbox and its result reaches the agent."""
    if not shutil.which("bwrap"):
        pytest.skip("bubblewrap (bwrap) is not installed")
    _, replies = await start_executor(nc, tmp_path)
    msg = request("c5").model_copy(
        update={
            "name": "execute_code",
            "arguments": {"language": "bash", "code": "id -u; cat /etc/shadow || echo denied"},
        }
    )
    await send_as_redelivery(nc, msg, 1)
    await until(lambda: len(replies) == 1, what="reply")
    result = replies[0]["result"]
    assert result["stdout"].endswith("denied\n"), result
    if os.geteuid() == 0:  # an unprivileged uid from the sandbox block
        assert 1_000_000 <= int(result["stdout"].split()[0]) < 1_001_024


async def test_breakout_attempts_leave_the_executor_healthy(nc: Client, tmp_path: Path) -> None:
    """Breakout attempts each get a contained result or a clear error; the executor still serves."""
    # A fork bomb, a sleeper, a memory hog, a shadow reader and an SSRF attempt, sent together;
    # then the executor must answer the next call.
    if not shutil.which("bwrap"):
        pytest.skip("bubblewrap (bwrap) is not installed")
    config = tmp_path / "agentops.toml"
    config.write_text("[tools.limits]\nmemory_mb = 256\nprocesses = 32\n")
    rt, replies = await start_executor(nc, tmp_path, config)
    assert rt.status()["isolation"]["limits"]["memory_mb"] == 256

    def code(call_id: str, language: str, source: str, timeout: float = 3) -> ToolRequested:
        args = {"language": language, "code": source, "timeout": timeout}
        # A task of its own each: the process limit is per task, so the bomb exhausting its
        # own task's processes must not decide what the hog's run reports.
        update = {"name": "execute_code", "arguments": args, "task_id": f"task_{call_id}"}
        return request(call_id).model_copy(update=update)

    attempts = [
        code("bomb", "bash", ":(){ :|:& };:\nsleep 30"),
        code("sleeper", "bash", "sleep 60 & sleep 60", timeout=1),
        code("hog", "python", "a = []\nwhile True:\n    a.append(bytearray(10**7))"),
        code("shadow", "python", "print(open('/etc/shadow').read())"),
        request("ssrf").model_copy(
            update={"name": "api_call", "arguments": {"url": "http://169.254.169.254/"}}
        ),
    ]
    for n, msg in enumerate(attempts):
        await send_as_redelivery(nc, msg, n)
    await until(lambda: len(replies) == len(attempts), timeout=30, what="every attempt answered")
    by_call = {r["call_id"]: r for r in replies}
    assert by_call["bomb"]["result"]["timed_out"] is True
    assert by_call["sleeper"]["result"]["timed_out"] is True
    assert "MemoryError" in by_call["hog"]["result"]["stderr"]
    assert "PermissionError" in by_call["shadow"]["result"]["stderr"]
    assert by_call["ssrf"]["error"]["code"] == "address_not_allowed"

    await send_as_redelivery(nc, request("after", mode="write", content="still here\n"), 99)
    await until(lambda: len(replies) == len(attempts) + 1, what="the next call's reply")
    assert replies[-1]["ok"] is True
    assert rt.status()["tool_calls"]["ok"] >= 5
    for consumer in rt.consumers:
        await consumer.stop()
