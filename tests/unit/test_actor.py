"""Who did it: a human's command or answer carries the actor to the event it causes."""

from __future__ import annotations

from agentops.protocol.messages import CancelTask, HumanResponse, PauseAgent, ResumeAgent
from tests.harness import Harness
from tests.unit.test_agent_reducer import ASK, WRITE, scripted


def test_submit_pause_resume_and_cancel_name_their_actor_on_their_events() -> None:
    """task.created, agent.status paused/resumed/cancelled carry the actor of each command."""
    h = Harness(llm=scripted(WRITE, WRITE), hold_llm=True)
    task_id, agent_id = h.submit("backend_developer", actor="bob")
    h.run()
    h.send(PauseAgent(id="p", task_id=task_id, agent_id=agent_id, ts=h.now(), actor="ada"))
    h.run()
    h.send(ResumeAgent(id="r", task_id=task_id, agent_id=agent_id, ts=h.now(), actor="admin"))
    h.run()
    h.put("task", CancelTask(id="c", task_id=task_id, ts=h.now(), actor="cy"))
    h.run()
    created = [e for e in h.events if e.type == "task.created"]
    assert created[0].data["actor"] == "bob"
    statuses = [
        (e.data["status"], e.data.get("actor")) for e in h.events if e.type == "agent.status"
    ]
    assert ("paused", "ada") in statuses
    assert ("running", "admin") in statuses
    assert ("cancelled", "cy") in statuses
    assert ("running", None) in statuses  # the system's own status changes name no one


def test_a_human_answer_and_a_rejected_command_name_their_actor() -> None:
    """human.response carries the answering token's name; so does a command.rejected."""
    h = Harness(llm=scripted(ASK))
    task_id, agent_id = h.submit("backend_developer")
    h.run()
    request = h.agents[agent_id].open_human_request()
    assert request is not None
    answer = HumanResponse(
        id="a", task_id=task_id, agent_id=agent_id, ts=h.now(), response="postgres",
        request_id=request.request_id, actor="bob",
    )  # fmt: skip
    h.send(answer)
    h.run()
    [response] = [e for e in h.events if e.type == "human.response"]
    assert response.data["actor"] == "bob"
    h.send(ResumeAgent(id="late", task_id=task_id, agent_id=agent_id, ts=h.now(), actor="ada"))
    h.run()
    assert h.events[-1].type == "command.rejected" and h.events[-1].data["actor"] == "ada"


def test_messages_without_an_actor_still_apply() -> None:
    """An older sender's command (no actor) works and its event has no actor key."""
    h = Harness(llm=scripted(WRITE), hold_llm=True)
    task_id, agent_id = h.submit("backend_developer")
    h.run()
    h.send(PauseAgent(id="p", task_id=task_id, agent_id=agent_id, ts=h.now()))
    h.run()
    [paused] = [e for e in h.events if e.type == "agent.status" and e.data["status"] == "paused"]
    assert "actor" not in paused.data
