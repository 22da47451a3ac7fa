"""SIGTERM drains: the message in flight is finished and acked, nothing more is taken."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nats

from agentops.bus.connection import MSG_ID
from agentops.natsserver import NatsServer
from agentops.protocol import subjects as s
from tests import fuzz
from tests.helpers import eventually_sync


async def publish_three(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    for n in range(3):
        doc = fuzz.template("tool.request", "task_drain", "agent_drain", n)
        subject = s.tool_requests("read_file")
        await js.publish(subject, json.dumps(doc).encode(), headers={MSG_ID: doc["id"]})
    await nc.close()


async def consumer_state(url: str) -> tuple[int, int, int]:
    nc = await nats.connect(url)
    info = await nc.jetstream().consumer_info(s.WORK_STREAM, s.TOOL_EXECUTOR_CONSUMER)
    await nc.close()
    return info.num_ack_pending or 0, info.num_pending or 0, info.delivered.consumer_seq


def test_sigterm_finishes_the_message_in_flight_and_takes_no_more(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """SIGTERM mid-message: that message is finished and acked, the others stay queued for
    another replica, and the process exits 0."""
    journal, log = tmp_path / "journal", tmp_path / "process.log"
    env = {**os.environ, "NATS_URL": nats_server.url, "AGENTOPS_DATA_DIR": str(tmp_path / "d"),
           "AGENTOPS_LOG_LEVEL": "info", "AGENTOPS_LOG_FORMAT": "json"}  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.drain_process", str(journal)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        eventually_sync(
            lambda: b"process.started" in log.read_bytes() or proc.poll() is not None,
            timeout=30, what="the process started",
        )  # fmt: skip
        assert proc.poll() is None, log.read_text()
        asyncio.run(publish_three(nats_server.url))
        eventually_sync(
            lambda: journal.exists() and "start fuzz.0" in journal.read_text(),
            timeout=30, what="the first message started",
        )  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
        assert journal.read_text().splitlines() == ["start fuzz.0", "done fuzz.0"]
        # Acked; the other two queued for another replica, never sent to this one.
        assert asyncio.run(consumer_state(nats_server.url)) == (0, 2, 1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
