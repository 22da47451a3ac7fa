"""Side-effecting tool calls against a real nats-server: the answer stored before it is sent,
so a lost reply is answered with the real result; `interrupted` only for a dead claimer."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from agentops.bus.setup import ensure_jetstream
from agentops.protocol import subjects as s
from agentops.protocol.errors import RetryableError
from agentops.protocol.messages import ToolCompleted, ToolRequested
from agentops.services import tool_calls
from agentops.services.tool_calls import (
    MAX_RECORD_BYTES,
    RECORD_ADAPTER,
    Calls,
    ToolCallRecord,
    record_key,
)
from agentops.store.kv import DocumentStore
from tests.helpers import until
from tests.integration.test_tool_executor import request, send_as_redelivery, start_executor

pytestmark = pytest.mark.integration


def answer_to(msg: ToolRequested, result: Any, ok: bool = True) -> ToolCompleted:
    return ToolCompleted(
        **msg.reply_header("tool-executor", datetime.now(UTC)),
        step=msg.step, call_id=msg.call_id, name=msg.name, ok=ok, result=result,
    )  # fmt: skip


def interrupted(msg: ToolRequested) -> ToolCompleted:
    return answer_to(msg, None, ok=False).model_copy(
        update={"error": tool_calls.interrupted_error(msg)}
    )


async def calls_on(nc: Client, owner: str | None = None) -> Calls:
    buckets = await ensure_jetstream(nc.jetstream())
    store = DocumentStore(buckets[s.TOOL_CALLS_BUCKET], RECORD_ADAPTER)
    return Calls(store, interrupted) if owner is None else Calls(store, interrupted, owner=owner)


def dead_owner() -> str:
    """The identity of a process of this host that has exited (and been reaped)."""
    child = subprocess.run(  # a process that prints who it is and exits
        [sys.executable, "-c", "from agentops.services import tool_calls as t; "
         "print(t.this_process())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return child.stdout.strip()


async def test_a_reply_lost_after_the_call_ran_is_answered_with_the_real_result(
    nc: Client, tmp_path: Path
) -> None:
    """The first reply's publish fails: the redelivery sends the stored result, and it ran once."""
    rt, replies = await start_executor(nc, tmp_path)
    publish_many = rt.publisher.publish_many
    lost: list[str] = []

    mailbox = s.agent_mailbox("backend_developer", "agent_x", "tool.completed")

    async def lose_first_reply(items: Any) -> list[int]:
        if not lost and any(subject == mailbox for subject, _, _ in items):
            lost.append(items[0][0])  # as if NATS went away at that instant
            raise RetryableError("JetStream did not confirm a publish in time")
        return await publish_many(items)

    rt.publisher.publish_many = lose_first_reply  # type: ignore[method-assign]
    msg = request("lost")
    await send_as_redelivery(nc, msg, 1)
    await until(lambda: len(replies) == 1, what="the redelivery's reply")
    assert lost, "the first reply was not lost"
    assert replies[0]["ok"] is True and replies[0]["error"] is None
    assert (tmp_path / "workspaces" / "task_x" / "out.txt").read_text() == "once\n"
    store = DocumentStore(rt.buckets[s.TOOL_CALLS_BUCKET], RECORD_ADAPTER)
    record, _ = await store.load(record_key(msg))
    assert record is not None and record.state == "done" and record.reply is not None
    assert record.reply.model_dump(mode="json") == replies[0]
    status = rt.status()["tool_calls"]
    assert status["stored"] == 1 and status["interrupted"] == 0
    for consumer in rt.consumers:
        await consumer.stop()


async def test_a_stored_answer_is_sent_again_not_interrupted(nc: Client, tmp_path: Path) -> None:
    """A done call delivered again long after (its reply acked and gone) gets the same answer."""
    rt, replies = await start_executor(nc, tmp_path)
    msg = request("again")
    await send_as_redelivery(nc, msg, 1)
    await until(lambda: len(replies) == 1, what="first reply")
    mailbox = s.agent_mailbox("backend_developer", "agent_x", "tool.completed")
    await nc.jetstream().purge_stream(s.WORK_STREAM, subject=mailbox)  # the agent took it
    await send_as_redelivery(nc, msg, 2)
    await until(lambda: len(replies) == 2, what="second reply")
    assert replies[1] == replies[0] and replies[1]["ok"] is True
    assert (tmp_path / "workspaces" / "task_x" / "out.txt").read_text() == "once\n"
    assert rt.status()["tool_calls"]["replayed"] == 1
    for consumer in rt.consumers:
        await consumer.stop()


async def test_a_delivery_of_a_call_still_running_here_waits_for_its_run(nc: Client) -> None:
    """Two deliveries of a running call: it runs once and both get its answer."""
    calls = await calls_on(nc)
    msg, release, runs = request("slow"), asyncio.Event(), []

    async def run() -> ToolCompleted:
        runs.append(1)
        await release.wait()
        return answer_to(msg, {"bytes": 5})

    first = asyncio.create_task(calls.answer(msg, run))
    await until(lambda: runs, what="the run started")
    second = asyncio.create_task(calls.answer(msg, run))
    release.set()
    assert (await first) == (await second) and (await first).ok
    assert runs == [1] and calls.jobs == {}


async def test_a_claim_of_a_dead_process_is_interrupted_and_stays_so(nc: Client) -> None:
    """A claim whose owner (this host) has exited: `interrupted`, stored, nothing runs."""
    calls = await calls_on(nc)
    msg = request("dead")
    claim = ToolCallRecord(
        state="started", request_id=msg.id, owner=dead_owner(), started_at=datetime.now(UTC)
    )
    await calls.store.save(record_key(msg), claim, 0)

    async def run() -> ToolCompleted:
        raise AssertionError("a call claimed by a dead process ran again")

    answer = await calls.answer(msg, run)
    assert answer.error is not None and answer.error.code == "interrupted"
    record, _ = await calls.store.load(record_key(msg))
    assert record is not None and record.reply == answer and record.owner == claim.owner
    assert (await calls.answer(msg, run)) == answer  # the stored answer from now on
    assert calls.counts == {"stored": 1, "replayed": 1, "interrupted": 1}


async def test_a_claim_of_a_live_process_is_waited_for_until_its_timeout(nc: Client) -> None:
    """Another live claimer may still be running the call: retried; past its timeout, interrupted."""
    calls = await calls_on(nc, owner=f"{socket.gethostname()}:1:0")  # not this process
    msg = request("alive")
    claim = ToolCallRecord(
        state="started",
        request_id=msg.id,
        owner=tool_calls.this_process(),  # this test process: alive
        started_at=datetime.now(UTC),
    )
    revision = await calls.store.save(record_key(msg), claim, 0)

    async def run() -> ToolCompleted:
        raise AssertionError("a call claimed by a live process ran here")

    with pytest.raises(RetryableError, match="may still be running"):
        await calls.answer(msg, run)
    old = claim.started_at - timedelta(seconds=msg.timeout_s + tool_calls.GRACE_S + 1)  # type: ignore[operator]
    await calls.store.save(record_key(msg), claim.model_copy(update={"started_at": old}), revision)
    answer = await calls.answer(msg, run)
    assert answer.error is not None and answer.error.code == "interrupted"


async def test_an_own_claim_with_no_run_here_runs_the_call(nc: Client) -> None:
    """A claim this process wrote but whose write was confirmed too late: the call runs once."""
    calls = await calls_on(nc)
    msg = request("late")
    claim = ToolCallRecord(
        state="started", request_id=msg.id, owner=calls.owner, started_at=datetime.now(UTC)
    )
    await calls.store.save(record_key(msg), claim, 0)
    runs: list[int] = []

    async def run() -> ToolCompleted:
        runs.append(1)
        return answer_to(msg, {"bytes": 5})

    assert (await calls.answer(msg, run)).ok and runs == [1]
    assert (await calls.answer(msg, run)).ok and runs == [1]


async def test_a_store_that_fails_is_retried_and_the_call_not_run_again(nc: Client) -> None:
    """Storing the answer fails twice (NATS away): it is stored on the third try; one run."""
    calls = await calls_on(nc)
    save, failures = calls.store.save, [0]

    async def flaky(key: str, doc: ToolCallRecord, revision: int) -> int:
        if doc.state == "done" and failures[0] < 2:
            failures[0] += 1
            raise RetryableError("JetStream did not confirm a publish in time")
        return await save(key, doc, revision)

    calls.store.save = flaky  # type: ignore[method-assign]
    msg, runs = request("flaky"), []

    async def run() -> ToolCompleted:
        runs.append(1)
        return answer_to(msg, {"bytes": 5})

    assert (await calls.answer(msg, run)).ok
    record, _ = await calls.store.load(record_key(msg))
    assert record is not None and record.state == "done" and runs == [1] and failures == [2]


async def test_a_large_result_is_stored_and_sent_cut_the_same(nc: Client) -> None:
    """A 3 MB result: the record fits, the answer sent is the stored one, the cut is marked."""
    calls = await calls_on(nc)
    msg = request("big")

    async def run() -> ToolCompleted:
        return answer_to(msg, {"stdout": "x" * 3_000_000, "exit_code": 0})

    answer = await calls.answer(msg, run)
    entry = await calls.store.kv.get(record_key(msg))
    assert entry.value is not None and len(entry.value) <= MAX_RECORD_BYTES
    stored = json.loads(entry.value)["reply"]
    assert stored == answer.model_dump(mode="json")
    assert answer.result["exit_code"] == 0 and "more characters]" in answer.result["stdout"]


def test_this_process_is_alive_and_an_exited_one_is_dead() -> None:
    """Owners are told apart by host, PID and start time: an exited process is dead."""
    assert not tool_calls.owner_dead(tool_calls.this_process())
    assert tool_calls.owner_dead(dead_owner())
    assert tool_calls.owner_dead("")  # a claim of an older version
    assert not tool_calls.owner_dead(f"elsewhere.example:{os.getpid()}:1")  # only time tells
    pid, start = tool_calls.this_process().split(":")[1:]
    assert tool_calls.owner_dead(f"{socket.gethostname()}:{pid}:{int(start) + 1}")  # PID reused


async def test_a_run_that_raises_is_answered_with_its_error_and_not_run_again(nc: Client) -> None:
    """A run that fails unexpectedly may have had effects: its error is stored, never rerun."""
    calls = await calls_on(nc)
    msg, runs = request("crash"), []

    async def run() -> ToolCompleted:
        runs.append(1)
        raise RuntimeError("handler bug")

    answer = await calls.answer(msg, run)
    assert answer.error is not None and answer.error.code == "tool_crashed"
    assert (await calls.answer(msg, run)) == answer and runs == [1]
