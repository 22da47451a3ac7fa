"""Perform a reducer's effects: map each to its subject and publish it durably.

Effects of one decision are independent of each other, so they are published together and
the acks awaited once;
each carries a deterministic message id, so publishing them again after a crash is harmless.
"""

from __future__ import annotations

from typing import assert_never

from pydantic import BaseModel

from agentops.bus.connection import event_subject, outgoing
from agentops.bus.publisher import Item, Publisher
from agentops.core.effects import (
    CallLLM,
    Effect,
    Emit,
    InvokeTool,
    ReportToTask,
    SendToAgent,
    ToWorkspaces,
)
from agentops.protocol import subjects as s


def route(effect: Effect) -> tuple[str, BaseModel, str]:
    """The subject, message and message id an effect is published as."""
    match effect:
        case Emit(event=event):
            return event_subject(event), event, event.id
        case CallLLM(message=msg):
            return s.llm_requests(), msg, msg.id
        case InvokeTool(message=msg):
            return s.tool_requests(msg.name), msg, msg.id
        case ReportToTask(message=msg):
            return s.task_inbox(msg.task_id, msg.type), msg, msg.id
        case SendToAgent(agent_type=agent_type, message=msg):
            assert msg.agent_id is not None
            return s.agent_mailbox(agent_type, msg.agent_id, msg.type), msg, msg.id
        case ToWorkspaces(message=msg):
            return s.workspace_requests(msg.type.rsplit(".", 1)[1]), msg, msg.id
        case _:
            assert_never(effect)


def effect_items(effects: tuple[Effect, ...]) -> list[Item]:
    """The effects as the Publisher sends them (to go out with other writes in one batch)."""
    return outgoing([route(e) for e in effects])


async def perform(publisher: Publisher, effects: tuple[Effect, ...]) -> None:
    await publisher.publish_many(effect_items(effects))
