"""`POST /agents/{id}/human-response` checks the answer against the open question: a wrong one
is a 400 saying what to send, and a fitting one reaches the agent normalised."""

from __future__ import annotations

from typing import Any

import pytest

from agentops.core.state import AssistantItem, HumanRequestItem
from agentops.llm.types import ToolCall
from agentops.protocol import subjects as s
from agentops.protocol.messages import HumanResponse
from tests.helpers import until
from tests.integration import test_edge_api as api
from tests.integration.test_edge_api import NOW, Edge, agent_state, assert_error, nothing, play

pytestmark = pytest.mark.integration

# The edge fixtures of test_edge_api (an edge app on its own nats-server), reused.
make_edge = api.make_edge
edge = api.edge


def asked(fmt: str = "free_text", choices: tuple[str, ...] | None = None) -> tuple[Any, ...]:
    """A thread whose model asked a question of this format."""
    call = ToolCall(id="call_1", name="request_human_input", arguments={"question": "?"})
    return (
        AssistantItem(at=NOW, step=2, tool_calls=(call,)),
        HumanRequestItem(
            at=NOW,
            request_id="agent_a1.h2.call_1",
            step=2,
            call_id="call_1",
            question="Deploy to production now?",
            format=fmt,
            choices=choices,
        ),
    )


@pytest.mark.parametrize(
    ("fmt", "choices", "bad", "hint"),
    [
        ("yes_no", None, "", 'answer "yes" or "no"'),
        ("yes_no", None, "banana", 'answer "yes" or "no"'),
        ("multiple_choice", ("blue", "green"), "banana", 'one of "blue", "green"'),
        ("free_text", None, "   ", "non-empty text"),
        ("free_text", None, None, "non-empty text"),
    ],
)
async def test_a_wrong_answer_is_400_saying_what_to_send(
    edge: Edge, fmt: str, choices: tuple[str, ...] | None, bad: Any, hint: str
) -> None:
    """Nothing is published for an answer that does not fit; the 400 names the fitting ones."""
    await edge.put_agent(agent_state(status="awaiting_human", thread=asked(fmt, choices)))
    mailbox = s.agent_mailbox_filter("backend_developer", "agent_a1")
    seen, sub = await play(edge.nc, mailbox, nothing)
    resp = await edge.client.post("/agents/agent_a1/human-response", json={"response": bad})
    assert resp.status == 400
    body = await resp.json()
    assert_error(body, "bad_request")
    assert hint in body["error"]["message"]
    await edge.nc.flush()
    assert seen == []
    await sub.unsubscribe()


@pytest.mark.parametrize(
    ("fmt", "choices", "reason", "given", "sent"),
    [
        ("yes_no", None, "tool", " YES ", "yes"),
        ("yes_no", None, "tool", False, "no"),
        ("multiple_choice", ("Blue", "green"), "tool", "blue", "Blue"),
        ("free_text", None, "tool", {"db": "pg"}, {"db": "pg"}),
        ("free_text", None, "approval", "yes", {"approved": True}),
    ],
)
async def test_a_fitting_answer_is_published_normalised(
    edge: Edge, fmt: str, choices: tuple[str, ...] | None, reason: str, given: Any, sent: Any
) -> None:
    """The agent receives "yes"/"no", the choice as offered, or the approval object."""
    thread = asked(fmt, choices)
    request = thread[-1].model_copy(update={"reason": reason})
    await edge.put_agent(agent_state(status="awaiting_human", thread=(thread[0], request)))
    mailbox = s.agent_mailbox_filter("backend_developer", "agent_a1")
    seen, sub = await play(edge.nc, mailbox, nothing)
    resp = await edge.client.post("/agents/agent_a1/human-response", json={"response": given})
    assert resp.status == 202  # nobody plays the agent here: queued, not confirmed
    await until(lambda: seen, what="the answer on the mailbox")
    [(_, msg)] = seen
    assert isinstance(msg, HumanResponse)
    assert msg.response == sent
    await sub.unsubscribe()
