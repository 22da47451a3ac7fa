"""A process on the shared lifecycle (`bus/service.serve`) whose handler takes a while: run by
`tests/integration/test_drain.py` as `python -m tests.drain_process <journal>`. Each message
it handles writes `start <id>` then, when its work is done, `done <id>` to the journal."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from agentops.bus.consumer import Delivery
from agentops.bus.service import Runtime, run_process
from agentops.protocol import subjects as s
from agentops.protocol.messages import WorkMessage

WORK_S = 1.5  # long enough for a SIGTERM to arrive mid-message


async def setup(rt: Runtime) -> None:
    journal = Path(sys.argv[1])

    def note(line: str) -> None:
        with journal.open("a") as out:
            out.write(f"{line}\n")

    async def handler(message: WorkMessage, _: Delivery) -> None:
        await asyncio.to_thread(note, f"start {message.id}")
        await asyncio.sleep(WORK_S)  # the work itself, not a wait for something
        await asyncio.to_thread(note, f"done {message.id}")

    consumer = rt.consumer(s.TOOL_EXECUTOR_CONSUMER, s.tool_requests_filter(), handler)
    await rt.add_consumer(consumer)


if __name__ == "__main__":
    run_process("tool-executor", "drain test process", setup)
