"""What a human's answer means for each kind of question the agent asks. Pure.

The question's `reason` decides first, then (for `tool` and `escalation`) its `format`:
- `approval` (a tool call the policy holds for a human): `{"approved": bool, "comment"?: str}`
  (`tools/policy.py: read_approval`), or the obvious `"yes"`/`"no"`/`"true"`/`"false"` and
  JSON booleans, meaning approved true/false. Nothing vaguer runs a call.
- `budget` (the next LLM call would exceed the task's budget): `{"budget_usd": number}` (or a
  bare number) above what is spent raises the budget; `{"stop": true, "comment"?}` (or
  `"stop"`) ends the run.
- `yes_no`: `"yes"`, `"no"`, `"true"`, `"false"` (trimmed, any case) or a JSON boolean; the
  answer is normalised to `"yes"` or `"no"`.
- `multiple_choice`: exactly one of the question's choices (trimmed; a case-insensitive match
  counts when it names one choice only), normalised to the choice as it was offered. A
  question that offers no choices takes free text.
- `free_text` (and any format this module does not know): any JSON that says something: a
  non-blank string, a number, a boolean, a non-empty object or list. `null`, `""`, blank
  strings, `{}` and `[]` are refused.

A refused answer is a `BadAnswer` whose message says exactly what to send. The edge checks an
answer with `parse_answer` before publishing it (a 400), and publishes `answer_json` of the
result, so the agent records the normalised answer; the reducer checks again, since a message
can also arrive over NATS directly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from agentops.core.state import HumanRequestItem
from agentops.tools.policy import ApprovalAnswer, read_approval

_YES = frozenset({"yes", "true"})
_NO = frozenset({"no", "false"})


@dataclass(frozen=True, slots=True)
class RaiseBudget:
    budget_usd: float


@dataclass(frozen=True, slots=True)
class Stop:
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class Free:
    """An answer to the model's own question (or an escalation), as the model will read it."""

    response: Any


Answer = ApprovalAnswer | RaiseBudget | Stop | Free


class BadAnswer(ValueError):
    """The answer does not fit the question; the message says what would."""


def parse_answer(request: HumanRequestItem, response: Any, spent_usd: float = 0.0) -> Answer:
    if request.reason == "approval":
        return approval(response)
    if request.reason == "budget":
        return _budget(response, spent_usd)
    if request.format == "yes_no":
        return Free(_yes_no(response))
    if request.format == "multiple_choice" and request.choices:
        return Free(_choice(response, request.choices))
    return Free(_free_text(response))


def answer_json(answer: Answer) -> Any:
    """The answer in its normalised JSON form (what the edge publishes to the agent)."""
    if isinstance(answer, ApprovalAnswer):
        return answer.model_dump(exclude_none=True)
    if isinstance(answer, RaiseBudget):
        return {"budget_usd": answer.budget_usd}
    if isinstance(answer, Stop):
        return {"stop": True} | ({} if answer.comment is None else {"comment": answer.comment})
    return answer.response


def _yes_or_no(response: Any) -> bool | None:
    if isinstance(response, bool):
        return response
    if isinstance(response, str):
        word = response.strip().lower()
        if word in _YES or word in _NO:
            return word in _YES
    return None


def _yes_no(response: Any) -> str:
    value = _yes_or_no(response)
    if value is None:
        raise BadAnswer(
            f'this question takes yes or no: answer "yes" or "no" (true/false work too); '
            f"got {_shown(response)}"
        )
    return "yes" if value else "no"


def _choice(response: Any, choices: tuple[str, ...]) -> str:
    if isinstance(response, str):
        text = response.strip()
        if text in choices:
            return text
        folded = [c for c in choices if c.strip().casefold() == text.casefold()]
        if len(folded) == 1:
            return folded[0]
    offered = ", ".join(json.dumps(c) for c in choices)
    raise BadAnswer(
        f"this question takes exactly one of its choices: answer one of {offered}; "
        f"got {_shown(response)}"
    )


def _says_nothing(response: Any) -> bool:
    if isinstance(response, str):
        return not response.strip()
    if isinstance(response, dict | list):
        return not response
    return response is None


def _free_text(response: Any) -> Any:
    if _says_nothing(response):
        raise BadAnswer(
            'this question needs an answer: send a non-empty text, e.g. "use postgres" '
            f"(any JSON but null, a blank string, {{}} or []); got {_shown(response)}"
        )
    return response


def approval(response: Any) -> ApprovalAnswer:
    answer = read_approval(response)
    if answer is not None:
        return answer
    yes_no = _yes_or_no(response)
    if yes_no is not None:
        return ApprovalAnswer(approved=yes_no)
    raise BadAnswer(
        'this request needs an approval: answer {"approved": true} (or "yes") to run the call, '
        'or {"approved": false, "comment": "why"} (or "no") to refuse it; '
        f"got {_shown(response)}"
    )


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
            f"the new budget must be above what is already spent (${spent_usd:.4f}): answer "
            f'{{"budget_usd": <more than {spent_usd:.4f}>}}, or {{"stop": true}}; got {value}'
        )
    raise BadAnswer(
        'this request is about the budget: answer {"budget_usd": <new budget>} to raise it, '
        f'or {{"stop": true}} to end the task; got {_shown(response)}'
    )


def _shown(response: Any) -> str:
    """The answer as received, cut short (it goes into an error message and an event)."""
    text = json.dumps(response, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
