"""Perform a reducer's effects: map each to its subject and publish it durably.

Effects of one decision are independent of each other, so they are published concurrently;
each carries a deterministic message id, so publishing them again after a crash is harmless.
"""

from __future__ import annotations

import asyncio
from typing import assert_never

from nats.js import JetStreamContext

from agentops.bus.connection import publish, publish_event
from agentops.core.effects import CallLLM, Effect, Emit, InvokeTool, ReportToTask, SendToAgent
from agentops.protocol import subjects as s


async def perform_one(js: JetStreamContext, effect: Effect) -> None:
    match effect:
        case Emit(event=event):
            await publish_event(js, event)
        case CallLLM(message=msg):
            await publish(js, s.llm_requests(), msg, msg.id)
        case InvokeTool(message=msg):
            await publish(js, s.tool_requests(msg.name), msg, msg.id)
        case ReportToTask(message=msg):
            await publish(js, s.task_inbox(msg.task_id), msg, msg.id)
        case SendToAgent(agent_type=agent_type, message=msg):
            assert msg.agent_id is not None
            await publish(js, s.agent_mailbox(agent_type, msg.agent_id), msg, msg.id)
        case _:
            assert_never(effect)


async def perform(js: JetStreamContext, effects: tuple[Effect, ...]) -> None:
    if len(effects) == 1:
        await perform_one(js, effects[0])
    elif effects:
        await asyncio.gather(*(perform_one(js, e) for e in effects))
