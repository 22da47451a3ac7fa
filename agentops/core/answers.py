"""What a human's answer means for each kind of question the agent asks. Pure.

- `tool` (the model called `request_human_input`) and `escalation`: any JSON goes.
- `approval` (a tool call the policy holds for a human): `{"approved": bool, "comment"?: str}`
  and nothing else (`tools/policy.py: read_approval`): only an explicit answer runs a call.
- `budget` (the next LLM call would exceed the task's budget): `{"budget_usd": number}` above
  what is spent raises the budget; `{"stop": true}` (or "stop") ends the run.

The edge checks an answer with `parse_answer` before publishing it (a bad one is a 400); the
reducer checks again, since a message can also arrive over NATS directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from agentops.core.state import HumanRequestItem
from agentops.tools.policy import ApprovalAnswer, read_approval


@dataclass(frozen=True, slots=True)
class RaiseBudget:
    budget_usd: float


@dataclass(frozen=True, slots=True)
class Stop:
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class Free:
    response: Any


Answer = ApprovalAnswer | RaiseBudget | Stop | Free


class BadAnswer(ValueError):
    """The answer does not fit the question; the message says what would."""


def parse_answer(request: HumanRequestItem, response: Any, spent_usd: float = 0.0) -> Answer:
    if request.reason == "approval":
        return _approval(response)
    if request.reason == "budget":
        return _budget(response, spent_usd)
    return Free(response)


def _approval(response: Any) -> ApprovalAnswer:
    answer = read_approval(response)
    if answer is None:
        raise BadAnswer(
            'this request needs an approval: answer {"approved": true} to run the call, or '
            '{"approved": false, "comment": "why"} to refuse it'
        )
    return answer


def _budget(response: Any, spent_usd: float) -> RaiseBudget | Stop:
    if isinstance(response, str) and response.strip().lower() == "stop":
        return Stop()
    if isinstance(response, dict) and response.get("stop") is True:
        comment = response.get("comment")
        return Stop(comment=comment if isinstance(comment, str) else None)
    value = response.get("budget_usd") if isinstance(response, dict) else response
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        if value > spent_usd:
            return RaiseBudget(budget_usd=float(value))
        raise BadAnswer(
            f"the new budget must be above what is already spent (${spent_usd:.4f}); got {value}"
        )
    raise BadAnswer(
        'this request is about the budget: answer {"budget_usd": <new budget>} to raise it, '
        'or {"stop": true} to end the task'
    )
