"""A specialist agent process (one per agent type): its mailbox lanes run the agent reducer.

Each agent's state is cached whole (head, thread and revision, `store/cache.py`). Replicas
share the lanes, so another replica may have moved an agent on since this one cached it: unless
this process got every delivery of the lane since (`Delivery.sole`), the head is read first
and only the items after the cached ones are fetched (`AgentStore.refresh`). A cached state
that loses its compare-and-swap write, or that would ignore the message (it may be the answer
a newer state waits for), is refreshed and the message decided again.

A transition is stored as its new thread items, then its head (the commit point,
`store/agents.py`). With a state known current, the work it sends goes out with the items and
its events with the head (two round trips); otherwise everything is saved before any effect is
published, so a stale state never leaks effects.

Each stored transition that starts a step, or ends the current one (the next step starts, or
the run ends), is counted in the process's metrics (`bus/metrics.py`): steps, their duration
from the state's `step_started_at` (the reducer's clock), and runs ended by status.

A message that cannot be applied after its retries ends its agent `failed` with
`internal_error` (a `FailAgent` to its own mailbox); if even that cannot be applied, its task
is told directly (`FailTask`), so nothing stays `running` with nothing in flight.
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import get_args

import structlog

from agentops.agents.definitions import AgentSpec
from agentops.agents.loader import load_agent_specs
from agentops.bus.connection import publish_all
from agentops.bus.consumer import Delivery
from agentops.bus.effects import effect_items, perform
from agentops.bus.metrics import STEP_DURATION, STEPS, TASKS_FINISHED, ProcessMetrics
from agentops.bus.publisher import WrongLastSequence
from agentops.bus.service import Runtime, run_process
from agentops.config import Settings, load_llm, load_settings, load_tools
from agentops.core import agent
from agentops.core.effects import Decision, Effect, Emit, ReportToTask
from agentops.core.state import AgentState
from agentops.protocol import subjects as s
from agentops.protocol.errors import ConfigError, ErrorInfo, PermanentError
from agentops.protocol.messages import (
    TERMINAL,
    AgentInbound,
    FailAgent,
    FailTask,
    WorkMessage,
)
from agentops.store import summaries
from agentops.store.agents import AgentStore, Loaded
from agentops.store.cache import AgentCache
from agentops.store.kv import Conflict
from agentops.tools.plugins import PluginDirectory
from agentops.tools.policy import approval_reason

log = structlog.get_logger(__name__)

AGENT_MESSAGES = get_args(AgentInbound)  # what may arrive in a mailbox
SOURCE = "agent"


def _hand_over(effect: Effect) -> bool:
    """Work for another process (an LLM or tool call), sent before the head is written."""
    return not isinstance(effect, Emit | ReportToTask)


def count_transition(metrics: ProcessMetrics, before: AgentState | None, after: AgentState) -> None:
    """The steps this stored transition started and the one it ended, and a run's end."""
    kind = (after.agent_type,)
    started = after.step - (before.step if before is not None else 0)
    if started > 0:
        metrics.inc(STEPS, kind, started)
    if before is None or before.status in TERMINAL:
        return  # nothing was running (a follow-up run starts from a finished state)
    ended = after.status in TERMINAL
    if before.step_started_at is not None and (started > 0 or ended):
        seconds = (after.updated_at - before.step_started_at).total_seconds()
        metrics.observe(STEP_DURATION, kind, seconds)
    if ended:
        metrics.inc(TASKS_FINISHED, (after.agent_type, after.status))


def bind_spec(spec: AgentSpec, settings: Settings) -> AgentSpec:
    """The type's spec with the facts of the model its route selects (window, prices) and the
    approval policy: the type's own rules, then the tool settings'."""
    route = load_llm(settings).route(spec.agent_type)
    approvals = load_tools(settings).approvals.with_type_rules(spec.agent_type, spec.approvals)
    return replace(
        spec,
        needs_approval=partial(approval_reason, approvals, spec.agent_type),
        model=route.model,
        context_window=route.context_window,
        max_output_tokens=route.max_output_tokens,
        input_usd_per_mtok=route.price.input_per_mtok,
        output_usd_per_mtok=route.price.output_per_mtok,
    )


async def setup(spec: AgentSpec, rt: Runtime) -> None:
    bound = bind_spec(spec, rt.settings)
    store = AgentStore(rt.nc, rt.js, rt.buckets[s.AGENTS_BUCKET], rt.publisher)
    plugins = PluginDirectory()
    await plugins.start(rt.js)
    rt.on_shutdown.append(plugins.stop)
    current: list[AgentSpec] = [bound]

    def live_spec() -> AgentSpec:
        """The bound spec with the plugin tools offered to this type right now (announced for
        it, and allowed by its `plugin_tools`)."""
        tools = tuple(t for t in plugins.tools_for(bound.agent_type) if bound.offers_plugin(t.name))
        if tools != current[0].plugin_tools:
            current[0] = replace(bound, plugin_tools=tools)
        return current[0]

    cache = AgentCache()
    loads = {"refreshed": 0}

    async def handle(msg: WorkMessage, delivery: Delivery) -> None:
        if not isinstance(msg, AGENT_MESSAGES):
            raise PermanentError(f"{msg.type} does not belong in an agent mailbox")
        agent_id = msg.agent_id
        if agent_id is None or s.inbox_owner(delivery.subject)[0] != agent_id:
            raise PermanentError("message agent_id does not match its mailbox")
        if not s.kind_fits(delivery.subject, msg.type):  # sent by a process not allowed to
            raise PermanentError(f"{msg.type} does not belong on {delivery.subject}")
        cached = cache.get(agent_id)
        if (
            cached is not None
            and delivery.sole
            and await transition(agent_id, msg, cached, from_cache=True)
        ):
            return
        # Not known current: read the head (and the items this process lacks) first.
        loads["refreshed"] += 1
        stored = await store.refresh(agent_id, cached)
        await transition(agent_id, msg, stored, from_cache=False)

    async def save_with_effects(decision: Decision[AgentState], base: Loaded) -> Loaded:
        """Work and items in one batch, then the head (and its summary, if a listing would
        show a change), the events and the reports to the task: JetStream delivers the work
        to the next process while the head is written, and a report (which may end the task)
        follows the agent's own events."""
        state = decision.state
        assert state is not None
        work = effect_items(tuple(e for e in decision.effects if _hand_over(e)))
        after = effect_items(tuple(e for e in decision.effects if not _hand_over(e)))
        if summaries.changed(base.state, state):
            after.insert(0, summaries.summary_write(state))
        items = store.item_writes(state, base.stored_len)
        head = store.head_write(state, base.revision)
        try:
            if items:
                await rt.publisher.publish_many([*work, *items])
                revision = (await rt.publisher.publish_many([head, *after]))[0]
            else:
                revision = (await rt.publisher.publish_many([*work, head, *after]))[len(work)]
        except WrongLastSequence as exc:
            raise store.conflict(state.agent_id, base.revision, exc) from exc
        return store.saved(state, base, revision, items)

    async def transition(
        agent_id: str, msg: AgentInbound, stored: Loaded | None, *, from_cache: bool
    ) -> bool:
        """Step, save, publish. False when a cached state may be stale: a message it ignores
        or a write it loses is decided again against the stored state. A cached state (known
        current) saves and publishes in two round trips; a state just read is saved first."""
        state = stored.state if stored is not None else None
        if state is not None and state.agent_type != spec.agent_type:
            raise PermanentError(f"agent {agent_id} is a {state.agent_type}")
        decision = agent.step(live_spec(), state, msg, datetime.now(UTC))
        if decision.ignored:
            if from_cache:
                return False
            structlog.contextvars.bind_contextvars(ignored=decision.ignored)
            return True
        if decision.state is not None:
            try:
                if from_cache:
                    assert stored is not None
                    saved = await save_with_effects(decision, stored)
                else:
                    saved = await store.save(decision.state, stored)
                    if summaries.changed(state, decision.state):
                        await rt.publisher.publish_many([summaries.summary_write(decision.state)])
            except Conflict:
                if from_cache:  # a retry of a write that did land, or a redelivery racing
                    log.warning("agent.state_conflict_after_publish", agent_id=agent_id)
                cache.drop(agent_id)
                if from_cache:
                    return False
                raise
            except BaseException:  # the write may have landed: read it back next time
                cache.drop(agent_id)
                raise
            if decision.state.status in ("completed", "failed", "cancelled"):
                cache.drop(agent_id)
            else:
                cache.put(agent_id, saved)
            count_transition(rt.metrics, state, decision.state)
            structlog.contextvars.bind_contextvars(
                status=decision.state.status, step=decision.state.step, one_batch=from_cache
            )
        if decision.replay and state is not None:  # the summary may be what was cut short
            await rt.publisher.publish_many([summaries.summary_write(state)])
        if not from_cache or decision.state is None:
            await perform(rt.publisher, decision.effects)
        return True

    async def give_up(msg: WorkMessage | None, subject: str, info: ErrorInfo) -> None:
        """A message that cannot be applied ends its agent (or, failing that, its task)."""
        agent_id = (msg.agent_id if msg is not None else None) or s.inbox_owner(subject)[0]
        task_id = msg.task_id if msg is not None else None
        try:
            s.check_id(agent_id, "agent id")
        except s.InvalidName:
            return
        if task_id is None:  # undecodable: its task is the agent's, if the head says so
            head = await store.head(agent_id)
            if head is None:
                return
            task_id = head.state.task_id
        error = ErrorInfo(
            code="internal_error",
            message=f"a message to agent {agent_id} could not be applied "
            f"({info.code}: {info.message})",
        )
        tag = hashlib.sha256((msg.id if msg is not None else subject).encode()).hexdigest()[:16]
        now = datetime.now(UTC)
        common = {"source": SOURCE, "task_id": task_id, "agent_id": agent_id, "ts": now}
        if isinstance(msg, FailAgent):  # the agent cannot even be failed: end its task
            fail_task = FailTask(id=f"{agent_id}.dead.{tag}", error=msg.error, **common)
            inbox = s.task_inbox(task_id, fail_task.type)
            await publish_all(rt.publisher, [(inbox, fail_task, fail_task.id)])
            return
        fail = FailAgent(id=f"{agent_id}.fail.{tag}", error=error, **common)
        await publish_all(
            rt.publisher, [(s.agent_mailbox(spec.agent_type, agent_id, fail.type), fail, fail.id)]
        )

    rt.status_extra = lambda: {
        "agent_type": spec.agent_type,
        "model": bound.model,
        "context_window": bound.context_window,
        "plugin_tools": [t.name for t in current[0].plugin_tools],
        "cached_agents": len(cache),
        "cached_bytes": cache.nbytes,
        "cache_evictions": cache.evicted,
        "state_reads": loads["refreshed"],
    }
    for lane in range(s.LANES):
        await rt.add_consumer(
            rt.consumer(
                s.agent_consumer(spec.agent_type, lane),
                s.agent_lane_filter(spec.agent_type, lane),
                handle,
                on_give_up=give_up,
            )
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="agentops-agent")
    parser.add_argument("--agent-type", required=True, help="any configured agent type")
    args = parser.parse_args(argv)
    try:
        specs = load_agent_specs(load_settings())
    except ConfigError as exc:  # a message for the operator, not a traceback
        parser.exit(2, f"error: {exc.message}\n")
    spec = specs.get(args.agent_type)
    if spec is None:
        parser.exit(
            2,
            f"error: unknown agent type {args.agent_type!r}; configured agent types: "
            f"{', '.join(sorted(specs))}\n",
        )
    run_process(
        s.agent_process(spec.agent_type),
        f"AgentOps {spec.name} agents",
        partial(setup, spec),
    )


if __name__ == "__main__":
    main()
