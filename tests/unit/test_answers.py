"""Answers validated by the question: each format takes what it asks for, normalised, and a
wrong answer is a BadAnswer that says exactly what to send."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from agentops.core.answers import (
    BadAnswer,
    Free,
    RaiseBudget,
    Stop,
    answer_json,
    parse_answer,
)
from agentops.core.state import HumanRequestItem
from agentops.tools.policy import ApprovalAnswer

NOW = datetime(2025, 1, 2, tzinfo=UTC)


def question(
    reason: str = "tool", fmt: str = "free_text", choices: tuple[str, ...] | None = None
) -> HumanRequestItem:
    return HumanRequestItem(
        at=NOW,
        request_id="a.h1",
        step=1,
        reason=reason,
        question="?",
        format=fmt,
        choices=choices,
    )


# ---- yes_no ----


@pytest.mark.parametrize(
    ("response", "normalised"),
    [
        ("yes", "yes"),
        (" YES ", "yes"),
        ("True", "yes"),
        (True, "yes"),
        ("no", "no"),
        ("No\n", "no"),
        ("false", "no"),
        (False, "no"),
    ],
)
def test_yes_no_takes_yes_no_true_false_and_normalises(response: Any, normalised: str) -> None:
    """yes/no/true/false in any case, trimmed, and JSON booleans become "yes" or "no"."""
    assert parse_answer(question(fmt="yes_no"), response) == Free(normalised)


@pytest.mark.parametrize("response", ["", "  ", None, "maybe", "y", 1, 0, {"answer": "yes"}])
def test_yes_no_refuses_anything_else_saying_what_to_send(response: Any) -> None:
    """An empty or vague answer to a yes/no question is refused, naming "yes" and "no"."""
    with pytest.raises(BadAnswer, match='answer "yes" or "no"'):
        parse_answer(question(fmt="yes_no"), response)


# ---- multiple_choice ----

CHOICES = ("postgres", "SQLite", "MySQL 8")


@pytest.mark.parametrize(
    ("response", "normalised"),
    [
        ("postgres", "postgres"),
        (" SQLite ", "SQLite"),
        ("sqlite", "SQLite"),
        ("mysql 8", "MySQL 8"),
    ],
)
def test_multiple_choice_takes_one_choice_normalised_to_it(response: str, normalised: str) -> None:
    """Exactly one of the choices, trimmed, case-insensitively, comes back as offered."""
    assert parse_answer(question(fmt="multiple_choice", choices=CHOICES), response) == Free(
        normalised
    )


@pytest.mark.parametrize("response", ["banana", "", None, 0, ["postgres"], "postgres, sqlite"])
def test_multiple_choice_refuses_what_is_not_a_choice_listing_them(response: Any) -> None:
    """Anything but one choice is refused with the choices spelled out."""
    with pytest.raises(BadAnswer) as exc:
        parse_answer(question(fmt="multiple_choice", choices=CHOICES), response)
    assert 'one of "postgres", "SQLite", "MySQL 8"' in str(exc.value)


def test_an_exact_match_wins_over_choices_differing_only_in_case() -> None:
    """With "A" and "a" offered, "a" is "a"; "  A" is "A"; an ambiguous fold is refused."""
    ask = question(fmt="multiple_choice", choices=("A", "a", "b"))
    assert parse_answer(ask, "a") == Free("a")
    assert parse_answer(ask, "  A") == Free("A")
    assert parse_answer(ask, "B") == Free("b")
    with pytest.raises(BadAnswer):
        parse_answer(question(fmt="multiple_choice", choices=("Yes", "YES")), "yes")


def test_a_multiple_choice_question_without_choices_takes_free_text() -> None:
    """A question the model asked without choices takes any non-empty answer."""
    assert parse_answer(question(fmt="multiple_choice", choices=()), "whatever") == Free("whatever")
    with pytest.raises(BadAnswer):
        parse_answer(question(fmt="multiple_choice"), "")


# ---- free_text (and escalations) ----


@pytest.mark.parametrize("response", ["use postgres", " x ", 0, 1.5, False, {"db": "pg"}, [1]])
def test_free_text_takes_any_json_that_says_something_unchanged(response: Any) -> None:
    """Text (kept as typed), numbers, booleans and non-empty objects or lists all count."""
    for reason in ("tool", "escalation"):
        assert parse_answer(question(reason), response) == Free(response)


@pytest.mark.parametrize("response", ["", "   ", "\n\t", None, {}, []])
def test_free_text_refuses_an_empty_answer(response: Any) -> None:
    """null, blank text and empty containers say nothing, so they are refused."""
    with pytest.raises(BadAnswer, match="non-empty text"):
        parse_answer(question(), response)


def test_an_unknown_format_is_treated_as_free_text() -> None:
    """A format this version does not know takes free text rather than everything."""
    assert parse_answer(question(fmt="rating"), "5 stars") == Free("5 stars")
    with pytest.raises(BadAnswer):
        parse_answer(question(fmt="rating"), " ")


# ---- approvals ----


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ({"approved": True}, {"approved": True}),
        ({"approved": False, "comment": "why"}, {"approved": False, "comment": "why"}),
        ("yes", {"approved": True}),
        (" True ", {"approved": True}),
        (True, {"approved": True}),
        ("NO", {"approved": False}),
        (False, {"approved": False}),
    ],
)
def test_an_approval_takes_the_documented_object_or_the_obvious_yes_no(
    response: Any, expected: dict[str, Any]
) -> None:
    """{"approved": bool, "comment"?} or yes/no/true/false; normalised to the object."""
    answer = parse_answer(question("approval"), response)
    assert isinstance(answer, ApprovalAnswer)
    assert answer_json(answer) == expected


@pytest.mark.parametrize("response", ["", "ok", "maybe", 1, None, {"approved": "yes"}, {}])
def test_a_vague_approval_is_refused_naming_both_forms(response: Any) -> None:
    """Only an explicit yes or no runs or refuses a held call."""
    with pytest.raises(BadAnswer) as exc:
        parse_answer(question("approval"), response)
    assert '{"approved": true} (or "yes")' in str(exc.value)
    assert '(or "no")' in str(exc.value)


# ---- budgets ----


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ({"budget_usd": 5}, RaiseBudget(5.0)),
        (2.5, RaiseBudget(2.5)),
        ({"stop": True}, Stop()),
        ({"stop": True, "comment": "enough"}, Stop("enough")),
        (" STOP ", Stop()),
    ],
)
def test_a_budget_question_takes_a_higher_budget_or_a_stop(response: Any, expected: Any) -> None:
    """A higher budget raises it; a stop ends the run; both normalise to their object."""
    answer = parse_answer(question("budget"), response, spent_usd=1.0)
    assert answer == expected
    assert parse_answer(question("budget"), answer_json(answer), spent_usd=1.0) == expected


@pytest.mark.parametrize(
    ("response", "hint"),
    [
        ("yes", '{"budget_usd": <new budget>}'),
        ({"budget_usd": "lots"}, '{"budget_usd": <new budget>}'),
        ({"budget_usd": 0.5}, "above what is already spent ($1.0000)"),
        (True, '{"stop": true}'),
    ],
)
def test_a_budget_answer_that_does_not_fit_says_what_to_send(response: Any, hint: str) -> None:
    """A budget at or below what is spent, or anything else, is refused with the forms to use."""
    with pytest.raises(BadAnswer) as exc:
        parse_answer(question("budget"), response, spent_usd=1.0)
    assert hint in str(exc.value)


def test_a_long_wrong_answer_is_cut_in_the_message() -> None:
    """The answer quoted back is at most 80 characters."""
    with pytest.raises(BadAnswer) as exc:
        parse_answer(question(fmt="yes_no"), "x" * 500)
    message = str(exc.value)
    assert message.endswith("...") and "x" * 77 not in message
