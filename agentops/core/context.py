"""Own the context window: estimate a request's size and compact old turns to fit.

Pure. Token counts are the estimates of `llm/tokens.py` (no tokenizer is downloaded), which
err high, so a request that fits by the estimate fits for real.

The conversation is the system prompt, the task, then turns: an assistant message with the
tool results that follow it. User messages between turns (guidance after an escalation, a
follow-up) stand alone. Compaction applies only when the rendered request would not fit the
budget (`context_window - max_output_tokens`, times `FILL`):
- Never touched: the system prompt, the task, user messages, every answer to
  `request_human_input`, and the newest `KEEP_RECENT` turns.
- Older turns are compacted oldest first, each through three levels before the next turn is
  touched: 1, tool output and assistant text cut to a head and a tail, long tool-call
  arguments cut, each with a marker saying how much was left out; 2, the marker alone; 3,
  the turn dropped (a turn holding a human's answer stops at 2), with one note after the
  task saying how many turns were. If even all of that does not fit, the request goes out
  as it is and the provider answers with a context-length error, which reaches the model and
  the human like any LLM error.
- How many of these steps are taken is planned at checkpoints, every `CHECKPOINT` turns: at
  least enough to leave room, under the budget, for as many tokens as the last `CHECKPOINT`
  turns took (but never compacting below `MIN_LOW_WATER` of the budget), and in any case
  enough to fit. Between checkpoints the plan stays unless the
  conversation outgrows it, so from one request to the next the compacted part stays the
  same objects and the request grows by appending. That is what lets an LLM request carry
  only the messages the gateway has not seen (`bus/conversation.py`). Both numbers are
  functions of the messages alone.

Cost: per agent (`owner`) the turns, each chunk's savings and the compacted part are kept
(`_Plan`), so a step costs its new messages; the result is the same as computed afresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from operator import is_
from typing import Any

from agentops.core.memo import GrowingMap, IdentityMemo
from agentops.llm.tokens import message_tokens, tools_tokens
from agentops.llm.types import Message, ToolCall, ToolSchema

_message_tokens = IdentityMemo(message_tokens, limit=200_000)
_sizes = GrowingMap(_message_tokens, owners=4096)
_tools_tokens: IdentityMemo[Sequence[ToolSchema], int] = IdentityMemo(tools_tokens, limit=256)

FILL = 0.9  # leave room for the estimate being low
KEEP_RECENT = 4  # turns never compacted
LEVELS = 3  # cut, marker only, dropped
CHECKPOINT = 8  # turns between two plans of the compaction
MIN_LOW_WATER = 0.5  # a plan never compacts below this share of the budget
HEAD_CHARS = 600
TAIL_CHARS = 300
ARGUMENT_CHARS = (2000, 200)  # longest argument string kept at levels 1 and 2
HUMAN_TOOL = "request_human_input"
PLANS = 4096  # agents whose compaction plan is kept


@dataclass(frozen=True, slots=True)
class Fitted:
    messages: tuple[Message, ...]
    estimated_tokens: int  # input tokens of the request as sent (messages + tool schemas)
    compacted: int  # how many messages were shortened or dropped


def marker(omitted: int) -> str:
    return f"[compacted: {omitted} older characters omitted to fit the context window]"


def _shorten(text: str) -> str:
    if len(text) <= HEAD_CHARS + TAIL_CHARS + 200:
        return text
    omitted = len(text) - HEAD_CHARS - TAIL_CHARS
    return f"{text[:HEAD_CHARS]}\n{marker(omitted)}\n{text[-TAIL_CHARS:]}"


def _cut_value(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"... [compacted: {len(value) - limit} characters omitted]"
    if isinstance(value, dict):
        return {k: _cut_value(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut_value(v, limit) for v in value]
    return value


def _cut_call(call: ToolCall, limit: int) -> ToolCall:
    arguments = _cut_value(call.arguments, limit)
    return call if arguments == call.arguments else call.model_copy(update={"arguments": arguments})


def _compact(message: Message, level: int) -> Message:
    """`message` at compaction level 1 or 2 (see the module docstring)."""
    if message.role == "tool" and message.name == HUMAN_TOOL:
        return message
    content = message.content
    if content:
        content = _shorten(content) if level == 1 else marker(len(content))
    calls = tuple(_cut_call(c, ARGUMENT_CHARS[level - 1]) for c in message.tool_calls)
    if content == message.content and all(map(is_, calls, message.tool_calls)):
        return message
    return message.model_copy(update={"content": content, "tool_calls": calls})


_AT_LEVEL: tuple[IdentityMemo[Message, Message], ...] = (
    IdentityMemo(lambda m: _compact(m, 1), limit=200_000),
    IdentityMemo(lambda m: _compact(m, 2), limit=200_000),
)


@lru_cache(maxsize=4096)
def dropped_note(turns: int) -> Message:
    return Message(
        role="user",
        content=f"[compacted: the {turns} oldest turns of this conversation were removed to "
        "fit the context window]",
    )


@dataclass
class _Plan:
    """What `fit` derived from one agent's messages, reused while they only grow."""

    messages: tuple[Message, ...] = ()
    opening: int = 0
    turns: list[tuple[int, int]] = field(default_factory=list)
    cumulative: list[int] = field(default_factory=list)  # token sums of messages[:i]
    # Per turn: its tokens at levels 0..3 (a turn a human answered in stops at level 2).
    costs: list[tuple[int, int, int, int]] = field(default_factory=list)
    # Savings of taking steps 1..n: the prefix sums of what each step saves.
    saved: list[int] = field(default_factory=lambda: [0])
    checkpoints: dict[int, int] = field(default_factory=dict)  # turns -> steps planned there
    steps: int = 0
    key: tuple[int, int] = (0, 0)  # (budget, tools tokens) the plan is for
    part: tuple[int, tuple[Message, ...], int, int] = (0, (), 0, 0)


_plans: dict[str, _Plan] = {}


def _plan_for(owner: str, messages: tuple[Message, ...], sizes: Sequence[int]) -> _Plan:
    plan = _plans.pop(owner, None) if owner else None
    if (
        plan is None
        or len(messages) < len(plan.messages)
        or not all(map(is_, messages, plan.messages))
    ):
        plan = _Plan(opening=2 if len(messages) > 1 and messages[1].role == "user" else 1)
        if owner and len(_plans) >= PLANS:
            del _plans[next(iter(_plans))]
    # Turns: the last one known may have grown; find turns again from its start.
    i = plan.turns.pop()[0] if plan.turns else plan.opening
    while i < len(messages):
        if messages[i].role != "assistant":
            i += 1
            continue
        end = i + 1
        while end < len(messages) and messages[end].role == "tool":
            end += 1
        plan.turns.append((i, end))
        i = end
    if not plan.cumulative:
        plan.cumulative.append(0)
    for size in sizes[len(plan.cumulative) - 1 :]:
        plan.cumulative.append(plan.cumulative[-1] + size)
    plan.messages = messages
    if owner:
        _plans[owner] = plan
    return plan


def _saved(plan: _Plan, steps: int) -> int:
    """Tokens saved by the first `steps` steps (turns older than the newest KEEP_RECENT)."""
    while len(plan.saved) <= steps:
        turn, level = divmod(len(plan.saved) - 1, LEVELS)
        while len(plan.costs) <= turn:
            start, end = plan.turns[len(plan.costs)]
            messages = plan.messages[start:end]
            human = any(m.name == HUMAN_TOOL for m in messages)
            at1 = sum(_message_tokens(_AT_LEVEL[0](m)) for m in messages)
            at2 = sum(_message_tokens(_AT_LEVEL[1](m)) for m in messages)
            whole = plan.cumulative[end] - plan.cumulative[start]
            plan.costs.append((whole, at1, at2, at2 if human else 0))
        costs = plan.costs[turn]
        earlier = plan.saved[turn * LEVELS]  # every earlier turn at level 3
        plan.saved.append(earlier + costs[0] - costs[level + 1])
    return plan.saved[steps]


def _fewest(plan: _Plan, total: int, budget: int, eligible: int, start: int) -> int:
    """The fewest steps, from `start`, leaving `total` tokens within `budget` (or all of the
    `eligible` turns' steps when none does)."""
    steps = start
    limit = eligible * LEVELS
    while steps < limit and total - _saved(plan, steps) + _note_cost(steps) > budget:
        steps += 1
    return steps


def _note_cost(steps: int) -> int:
    return _message_tokens(dropped_note(1)) if steps >= LEVELS else 0


def _compacted_part(plan: _Plan, steps: int) -> tuple[tuple[Message, ...], int, int]:
    """The messages of the turns `steps` touch (each earlier turn dropped or at level 2, the
    last at its level), with the user messages between them; how many turns were dropped and
    how many messages changed."""
    if plan.part[0] == steps and steps:
        return plan.part[1:]
    last, level = divmod(steps - 1, LEVELS)
    out: list[Message] = []
    dropped = changed = 0
    previous_end = plan.opening
    for t, (start, end) in enumerate(plan.turns[: last + 1]):
        out.extend(plan.messages[previous_end:start])
        previous_end = end
        turn = plan.messages[start:end]
        turn_level = LEVELS if t < last else level + 1
        if turn_level == LEVELS and not any(m.name == HUMAN_TOOL for m in turn):
            dropped += 1
            changed += len(turn)
            continue
        memo = _AT_LEVEL[min(turn_level, 2) - 1]
        for m in turn:
            short = memo(m)
            changed += short is not m
            out.append(short)
    plan.part = (steps, tuple(out), dropped, changed)
    return plan.part[1:]


def fit(
    messages: Sequence[Message],
    tools: Sequence[ToolSchema],
    *,
    context_window: int,
    max_output_tokens: int,
    owner: str = "",
) -> Fitted:
    """`messages` as they fit in the window, compacted by the rules in the module docstring.
    `owner` (an agent id) lets successive calls reuse what they share."""
    budget = int((context_window - max_output_tokens) * FILL)
    messages = tuple(messages)
    sizes = _sizes(owner, messages) if owner else tuple(map(_message_tokens, messages))
    tools_cost = _tools_tokens(tools)
    total = tools_cost + sum(sizes)
    if total <= budget:
        return Fitted(messages, total, 0)
    plan = _plan_for(owner, messages, sizes)
    if plan.key != (budget, tools_cost):
        plan.checkpoints, plan.steps, plan.key = {}, 0, (budget, tools_cost)
    eligible = max(0, len(plan.turns) - KEEP_RECENT)
    if eligible == 0:
        return Fitted(messages, total, 0)
    # At the last checkpoint: enough steps to bring what was there under the low water mark.
    # (Only turns with another after them count: the last one may still be growing.)
    checkpoint = (len(plan.turns) - 1) // CHECKPOINT * CHECKPOINT
    planned = plan.checkpoints.get(checkpoint)
    if planned is None:
        planned = 0
        if checkpoint:
            end = plan.turns[checkpoint - 1][1]
            at_checkpoint = tools_cost + plan.cumulative[end]
            # Room for as much again as the last CHECKPOINT turns took, within limits.
            growth = plan.cumulative[end] - plan.cumulative[plan.turns[checkpoint - CHECKPOINT][0]]
            low = max(int(budget * MIN_LOW_WATER), budget - growth)
            planned = _fewest(plan, at_checkpoint, low, max(0, checkpoint - KEEP_RECENT), 0)
        plan.checkpoints = {checkpoint: planned}
    # The steps only grow while the messages do: search on from the last answer.
    plan.steps = _fewest(plan, total, budget, eligible, max(planned, plan.steps))
    steps = min(plan.steps, eligible * LEVELS)
    if steps == 0:
        return Fitted(messages, total, 0)
    part, dropped, changed = _compacted_part(plan, steps)
    last = (steps - 1) // LEVELS
    tail = plan.turns[last + 1][0] if last + 1 < len(plan.turns) else len(messages)
    head = messages[: plan.opening]
    out = (*head, dropped_note(dropped), *part) if dropped else (*head, *part)
    out += messages[tail:]
    estimate = (
        tools_cost
        + plan.cumulative[plan.opening]
        + sum(map(_message_tokens, out[plan.opening : len(out) - (len(messages) - tail)]))
        + plan.cumulative[len(messages)]
        - plan.cumulative[tail]
    )
    return Fitted(out, estimate, changed)
