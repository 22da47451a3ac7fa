"""A specialist agent process (one per agent type): its mailbox lanes run the agent reducer.

The state of each agent is cached with its KV revision. Replicas share the lanes, so another
replica may have moved an agent on since: a cached state that loses its compare-and-swap write,
or that would ignore the message (it may be the answer the newer state waits for), is
replaced by the stored state and the message decided again.

A transition's state write and effects go out in one batch (one round trip) when the cached
state is known to be the stored one (`Delivery.sole`); otherwise the state is saved first.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import get_args

import structlog

from agentops.agents.definitions import AGENT_SPECS, AgentSpec
from agentops.bus.consumer import Delivery
from agentops.bus.effects import effect_items, perform
from agentops.bus.publisher import WrongLastSequence
from agentops.bus.service import Runtime, run_process
from agentops.config import Settings, load_llm
from agentops.core import agent
from agentops.core.effects import Decision, Emit
from agentops.core.state import AgentState
from agentops.protocol import subjects as s
from agentops.protocol.errors import PermanentError
from agentops.protocol.messages import AgentInbound, WorkMessage
from agentops.store.kv import Conflict, agent_states
from agentops.tools.plugins import PluginDirectory
from agentops.tools.policy import approval_reason, load_tool_settings

log = structlog.get_logger(__name__)

AGENT_MESSAGES = get_args(AgentInbound)  # what may arrive in a mailbox
CACHE_LIMIT = 10_000


def bind_spec(spec: AgentSpec, settings: Settings) -> AgentSpec:
    """The type's spec with the facts of the model its route selects (window, prices) and the
    approval policy of the tool settings."""
    route = load_llm(settings).route(spec.agent_type)
    approvals = load_tool_settings(settings.section("tools"), settings.config_source).approvals
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
    store = agent_states(rt.buckets, rt.publisher)
    plugins = PluginDirectory()
    await plugins.start(rt.js)
    rt.on_shutdown.append(plugins.stop)
    current: list[AgentSpec] = [bound]

    def live_spec() -> AgentSpec:
        """The bound spec with the plugin tools offered to this type right now."""
        tools = plugins.tools_for(bound.agent_type)
        if tools != current[0].plugin_tools:
            current[0] = replace(bound, plugin_tools=tools)
        return current[0]

    cache: dict[str, tuple[AgentState, int]] = {}

    async def handle(msg: WorkMessage, delivery: Delivery) -> None:
        if not isinstance(msg, AGENT_MESSAGES):
            raise PermanentError(f"{msg.type} does not belong in an agent mailbox")
        agent_id = msg.agent_id
        if agent_id is None or delivery.subject.rsplit(".", 1)[-1] != agent_id:
            raise PermanentError("message agent_id does not match its mailbox")
        cached = cache.get(agent_id)
        if cached is not None and await transition(
            agent_id, msg, *cached, cached=True, current=delivery.sole
        ):
            return
        # Nothing cached, or the cache is stale: another replica moved this agent on.
        cache.pop(agent_id, None)
        state, revision = await store.load(agent_id)
        await transition(agent_id, msg, state, revision, cached=False, current=False)

    async def save_with_effects(
        agent_id: str, decision: Decision[AgentState], revision: int
    ) -> int:
        """The state's compare-and-swap write and the effects in one batch; the new revision.
        Work first: JetStream stores and delivers it to the next process while it takes the
        state and the events after it."""
        assert decision.state is not None
        work = tuple(e for e in decision.effects if not isinstance(e, Emit))
        events = tuple(e for e in decision.effects if isinstance(e, Emit))
        items = [
            *effect_items(work),
            store.cas_item(agent_id, decision.state, revision),
            *effect_items(events),
        ]
        try:
            return (await rt.publisher.publish_many(items))[len(work)]
        except WrongLastSequence as exc:
            raise store.conflict(agent_id, revision, exc) from exc

    async def transition(
        agent_id: str,
        msg: AgentInbound,
        state: AgentState | None,
        revision: int,
        *,
        cached: bool,
        current: bool,
    ) -> bool:
        """Step, save (CAS), publish. False when a cached state may be stale: a message it
        ignores or a write it loses is decided again against the stored state.

        `current`: the cached state is known to be the stored one (this process received
        every delivery of the lane since it wrote it), so the state write and the effects go
        out together, one round trip instead of two. Otherwise the state is saved first: a
        stale state's effects must never be published."""
        if state is not None and state.agent_type != spec.agent_type:
            raise PermanentError(f"agent {agent_id} is a {state.agent_type}")
        decision = agent.step(live_spec(), state, msg, datetime.now(UTC))
        if decision.ignored:
            if cached:
                return False
            structlog.contextvars.bind_contextvars(ignored=decision.ignored)
            return True
        published = False
        if decision.state is not None:
            try:
                if current:
                    revision = await save_with_effects(agent_id, decision, revision)
                    published = True
                else:
                    revision = await store.save(agent_id, decision.state, revision)
            except Conflict:
                if current:  # a retry of a write that did land, or a redelivery racing
                    log.warning("agent.state_conflict_after_publish", agent_id=agent_id)
                cache.pop(agent_id, None)
                if cached:
                    return False
                raise
            except BaseException:  # the write may have landed: read it back next time
                cache.pop(agent_id, None)
                raise
            if decision.state.status in ("completed", "failed", "cancelled"):
                cache.pop(agent_id, None)
            else:
                if len(cache) >= CACHE_LIMIT:
                    cache.pop(next(iter(cache)))
                cache[agent_id] = (decision.state, revision)
            structlog.contextvars.bind_contextvars(
                status=decision.state.status, step=decision.state.step, one_round_trip=published
            )
        if not published:
            await perform(rt.publisher, decision.effects)
        return True

    rt.status_extra = lambda: {
        "agent_type": spec.agent_type,
        "model": bound.model,
        "context_window": bound.context_window,
        "plugin_tools": [t.name for t in current[0].plugin_tools],
        "cached_agents": len(cache),
    }
    for lane in range(s.LANES):
        await rt.add_consumer(
            rt.consumer(
                s.agent_consumer(spec.agent_type, lane),
                s.agent_lane_filter(spec.agent_type, lane),
                handle,
            )
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="agentops-agent")
    parser.add_argument("--agent-type", required=True, choices=sorted(AGENT_SPECS))
    args = parser.parse_args(argv)
    spec = AGENT_SPECS[args.agent_type]
    run_process(
        s.agent_process(spec.agent_type),
        f"AgentOps {spec.name} agents",
        partial(setup, spec),
    )


if __name__ == "__main__":
    main()
