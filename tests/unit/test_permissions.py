"""Each process's NATS permissions, derived from subjects.py: what it needs, and nothing more."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentops import credentials, natsconf
from agentops.agents.loader import shipped_types
from agentops.protocol import permissions as perms
from agentops.protocol import subjects as s

ROOT = Path(__file__).resolve().parents[2]
API = s.js_api()
TYPES = shipped_types()
EVERY = perms.processes()


def may(process: str, subject: str) -> bool:
    return perms.for_process(process).may_publish(subject)


def senders(subject: str) -> set[str]:
    return {p for p in EVERY if may(p, subject)}


@pytest.mark.parametrize(
    ("pattern", "subject", "covered"),
    [
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.b.d", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("a.*", "a.*", True),
        ("a.*", "a.>", False),
        ("a.>", "a.*.c", True),
        ("a.b", "a.b.c", False),
    ],
)
def test_covers_follows_nats_wildcards(pattern: str, subject: str, covered: bool) -> None:
    """`*` is one token, `>` one or more; a wildcard subject needs a pattern at least as wide."""
    assert perms.covers(pattern, subject) is covered


def test_only_agents_send_tool_and_llm_requests() -> None:
    """A forged tool request or LLM request can come from no process but an agent."""
    agents = {s.agent_process(t) for t in TYPES}
    assert senders(s.tool_requests("execute_code")) == agents
    assert senders(s.llm_requests()) == agents


@pytest.mark.parametrize(
    ("message_type", "allowed"),
    [
        ("agent.human_response", {"edge"}),
        ("agent.pause", {"edge"}),
        ("agent.resume", {"edge"}),
        ("agent.start", {"orchestrator"}),
        ("agent.cancel", {"orchestrator"}),
        (
            "agent.fail",
            {"orchestrator", "agent-devops_engineer"},
        ),  # its own: a message it cannot apply
        ("tool.completed", {"tool-executor", "orchestrator"}),  # a delegation's result
        ("agent.message", {"orchestrator"}),
        ("llm.completed", {"llm-gateway"}),
        ("llm.failed", {"llm-gateway"}),
    ],
)
def test_each_mailbox_kind_has_only_its_senders(message_type: str, allowed: set[str]) -> None:
    """A devops agent's mailbox takes each kind of message only from the process that sends it."""
    assert senders(s.agent_mailbox("devops_engineer", "agent_x", message_type)) == allowed


@pytest.mark.parametrize(
    ("message_type", "allowed"),
    [
        ("task.submit", {"edge", "orchestrator"}),  # children start and are cancelled
        ("task.cancel", {"edge", "orchestrator"}),
        ("task.message", {"edge"}),
        ("workflow.human_response", {"edge"}),
        ("task.delegate", {s.agent_process(t) for t in TYPES}),
        ("task.child_finished", {"orchestrator"}),
        ("workspace.committed", {"tool-executor"}),
        ("task.delete", {"edge", "orchestrator"}),
        ("task.fail", {"orchestrator", *(s.agent_process(t) for t in TYPES)}),
        ("agent.report", {s.agent_process(t) for t in TYPES}),
    ],
)
def test_each_task_inbox_kind_has_only_its_senders(message_type: str, allowed: set[str]) -> None:
    """Task submissions come from the edge, reports from agents; no one else may forge them."""
    assert senders(s.task_inbox("task_x", message_type)) == allowed


def test_agent_state_is_written_by_agents_and_read_by_agents_and_the_edge() -> None:
    """Only agent processes write heads and thread items; the gateway and executor read none."""
    agents = {s.agent_process(t) for t in TYPES}
    assert senders(s.kv_key(s.AGENTS_BUCKET, "agent_x")) == agents
    assert senders(s.thread_item("agent_x", 3)) == agents
    head_read = f"{API}.DIRECT.GET.{s.kv_stream(s.AGENTS_BUCKET)}.{s.kv_key(s.AGENTS_BUCKET, 'a')}"
    assert senders(head_read) == {"edge", *agents}
    tasks_read = f"{API}.DIRECT.GET.{s.kv_stream(s.TASKS_BUCKET)}.{s.kv_key(s.TASKS_BUCKET, 't')}"
    assert senders(tasks_read) == {"edge", "orchestrator"}


def test_agent_summaries_are_written_by_agents_and_the_declarer_and_read_by_the_edge() -> None:
    """Agents write their summaries; the orchestrator only fills them in from the heads (an
    older store) and purges them; the edge alone reads them (its index of agents)."""
    agents = {s.agent_process(t) for t in TYPES}
    assert senders(s.kv_key(s.SUMMARIES_BUCKET, "agent_x")) == {"orchestrator", *agents}
    stream = s.kv_stream(s.SUMMARIES_BUCKET)
    read = f"{API}.DIRECT.GET.{stream}.{s.kv_key(s.SUMMARIES_BUCKET, 'a')}"
    assert senders(read) == {"edge"}
    assert senders(s.consumer_create(API, stream)) == {"edge"}


def test_only_the_edge_reads_the_events_stream_for_websockets() -> None:
    """The edge's feed (an unnamed push consumer, its flow control) and its replays (batched
    direct gets) are the edge's alone; nobody may read single events by subject."""
    events = s.EVENTS_STREAM
    assert senders(f"{API}.DIRECT.GET.{events}") == {"edge"}
    assert senders(f"{API}.DIRECT.GET.{events}.{s.event('t', None, 'task.created')}") == set()
    assert senders(s.consumer_create(API, events)) == {"edge"}
    assert senders(f"$JS.FC.{events}.x.y") == {"edge"}


def test_streams_are_managed_by_the_orchestrator_alone_and_deleted_by_no_one() -> None:
    """Create, update and purge belong to the declarer; no process may delete a stream."""
    for stream in (*s.STREAMS, *(s.kv_stream(b) for b in s.BUCKETS)):
        for action in ("CREATE", "UPDATE"):
            assert senders(s.stream_api(API, action, stream)) == {perms.DECLARER}, stream
        assert senders(s.stream_api(API, "DELETE", stream)) == set(), stream
    assert senders(s.stream_api(API, "PURGE", s.WORK_STREAM)) == set()


def test_each_consumer_is_created_pinned_to_its_filter_by_its_own_process() -> None:
    """CONSUMER.CREATE names consumer and filter; another process's consumer is not allowed."""
    lane = s.agent_lane_filter("backend_developer", 3)
    create = s.consumer_create(API, s.WORK_STREAM, s.agent_consumer("backend_developer", 3), lane)
    assert senders(create) == {"agent-backend_developer"}
    other = s.consumer_create(API, s.WORK_STREAM, s.TOOL_EXECUTOR_CONSUMER, "agentops.>")
    assert senders(other) == set()
    assert senders(s.consumer_create(API, s.WORK_STREAM)) == set()  # no unpinned work consumer


def test_every_process_receives_only_its_own_replies() -> None:
    """Each subscribes to its own inbox prefix and its own control endpoints only."""
    for process in EVERY:
        mine = perms.for_process(process)
        assert mine.may_subscribe(f"{s.inbox_prefix(process)}.x.y")
        assert mine.responses_s == perms.SERVICE_REPLY_S
        for other in EVERY:
            if other != process:
                assert not mine.may_subscribe(f"{s.inbox_prefix(other)}.x"), (process, other)
                assert not mine.may_subscribe(s.control_subject(other, "status"))
        assert not mine.may_publish(s.every_inbox())


def test_a_process_waits_only_for_streams_it_may_look_at() -> None:
    """`waits_for` lists streams whose info the process may ask; KV streams are bound blind."""
    assert perms.waits_for("llm-gateway") == (s.WORK_STREAM, s.EVENTS_STREAM, s.DLQ_STREAM)
    for process in EVERY:
        assert set(perms.waits_for(process)) <= set(s.STREAMS)
    assert not may("llm-gateway", s.stream_api(API, "INFO", s.kv_stream(s.TASKS_BUCKET)))


def test_plugin_announces_and_serves_only_its_own_tool() -> None:
    """A plugin user writes its own announcement and serves its own subject, nothing else."""
    mine = perms.for_plugin("word_count")
    assert mine.may_publish(s.kv_key(s.PLUGINS_BUCKET, "word_count"))
    assert not mine.may_publish(s.kv_key(s.PLUGINS_BUCKET, "shell"))
    assert mine.may_subscribe(s.plugin_calls("word_count"))
    assert not mine.may_subscribe(s.plugin_calls("shell"))
    assert not mine.may_publish(s.tool_requests("word_count"))
    assert mine.responses_s == perms.PLUGIN_REPLY_S  # a call may take up to 600 s


def test_remote_gateway_uses_the_hub_domain_and_leaf_shapes() -> None:
    """Across the leaf: `$JS.hub.API`, replies by publish right, answers only of the llm kind."""
    leaf = natsconf.gateway_permissions()
    assert leaf.responses_s is None and leaf.may_publish("_INBOX.agentops-edge.x")
    assert leaf.may_publish(s.stream_api(s.js_api("hub"), "INFO", s.WORK_STREAM))
    assert not leaf.may_publish(s.stream_api(API, "INFO", s.WORK_STREAM))
    assert leaf.may_publish(s.agent_mailbox("backend_developer", "a", "llm.completed"))
    assert not leaf.may_publish(s.agent_mailbox("backend_developer", "a", "agent.human_response"))


def test_checked_in_gateway_permissions_are_the_generators_output() -> None:
    """deploy/hybrid/gateway-permissions.conf is exactly what `agentops init --hybrid-files` writes."""
    checked_in = (ROOT / "deploy" / "hybrid" / "gateway-permissions.conf").read_text()
    assert checked_in == natsconf.gateway_permissions_file()


def test_the_procfile_runs_every_process_and_nats_from_the_generated_config() -> None:
    """Procfile: nats-server reads the config `agentops init` writes; one line per process."""
    lines = [x for x in (ROOT / "Procfile").read_text().splitlines() if x and x[0] != "#"]
    entries = dict(line.split(": ", 1) for line in lines)
    assert entries.pop("nats") == "nats-server -c .agentops/nats/nats.conf"
    assert entries == {
        p: f"agentops run agent --type {p.removeprefix('agent-')}"
        if p.startswith("agent-")
        else f"agentops run {p}"
        for p in s.all_processes(TYPES)
    }


def test_server_config_names_public_keys_only_and_no_monitoring_by_default(
    tmp_path: Path,
) -> None:
    """The generated config has each user's public key, never a seed; monitoring is opt-in."""
    found = credentials.ensure(tmp_path, [*EVERY, credentials.ADMIN, credentials.SYSTEM])
    text = natsconf.server_config(found, host="127.0.0.1", port=4999, store_dir=tmp_path / "js")
    for credential in found.values():
        assert credential.public_key in text
        assert credential.seed.decode() not in text
    assert "\nhttp:" not in text and "no_auth_user" not in text
    watched = natsconf.server_config(
        found, host="127.0.0.1", port=4999, store_dir=tmp_path / "js", monitor_port=8222
    )
    assert 'http: "127.0.0.1:8222"' in watched


def test_kind_fits_checks_new_subjects_and_accepts_older_kindless_ones() -> None:
    """A message must fit its subject's kind; an older version's subject has none to check."""
    human = s.agent_mailbox("backend_developer", "agent_x", "agent.human_response")
    assert s.kind_fits(human, "agent.human_response")
    assert not s.kind_fits(
        s.agent_mailbox("backend_developer", "agent_x", "tool.completed"), "agent.human_response"
    )
    assert s.inbox_owner(human) == ("agent_x", "human")
    assert s.inbox_owner("agentops.agent.backend_developer.l03.agent_x") == ("agent_x", None)
    assert s.inbox_owner(s.task_inbox("task_1", "task.submit")) == ("task_1", "submit")
    assert s.inbox_owner("agentops.task.l03.task_1") == ("task_1", None)
    with pytest.raises(s.InvalidName):
        s.agent_mailbox("backend_developer", "agent_x", "task.submit")


def test_a_replica_credential_gets_its_process_rights_and_its_own_key(tmp_path: Path) -> None:
    """`agent-backend_developer@2` is a user of its own with the agent process's permissions."""
    found = credentials.ensure(tmp_path, ["agent-backend_developer", "agent-backend_developer@2"])
    users, _ = natsconf.principals(found)
    by_name = {u.name: u for u in users}
    first, second = by_name["agent-backend_developer"], by_name["agent-backend_developer@2"]
    assert first.nkey != second.nkey and first.permissions == second.permissions


def test_only_the_edge_reads_stored_dead_letters() -> None:
    """/health shows the last dead letter: the edge may get one DLQ message, no other reader."""
    assert senders(f"{API}.STREAM.MSG.GET.{s.DLQ_STREAM}") == {"edge"}


def test_the_edge_may_look_at_the_llm_and_tool_consumers_only() -> None:
    """waiting_for asks who serves the LLM and tool consumers; an agent lane stays closed."""
    edge = perms.for_process("edge")
    for consumer in (s.LLM_GATEWAY_CONSUMER, s.TOOL_EXECUTOR_CONSUMER):
        assert edge.may_publish(s.consumer_api(API, "INFO", s.WORK_STREAM, consumer))
    lane = s.agent_consumer("backend_developer", 0)
    assert not edge.may_publish(s.consumer_api(API, "INFO", s.WORK_STREAM, lane))
