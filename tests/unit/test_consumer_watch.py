"""The consumers' stall check (`bus/consumer.py: stall_check`): when a lane is kicked."""

from __future__ import annotations

from agentops.bus.consumer import stall_check


def test_a_consumer_with_work_and_nothing_out_is_stalled_at_the_second_look() -> None:
    """Pending, nothing unacked, the same last delivery twice in a row: stalled."""
    seen, stalled = stall_check(None, pending=1, ack_pending=0, delivered=41)
    assert (seen, stalled) == (41, False)
    assert stall_check(seen, pending=1, ack_pending=0, delivered=41) == (None, True)


def test_a_consumer_that_delivered_since_the_last_look_is_not_stalled() -> None:
    """A delivery between two looks means it moves: look again later."""
    assert stall_check(41, pending=1, ack_pending=0, delivered=42) == (42, False)


def test_a_consumer_waiting_for_an_ack_or_without_work_is_not_stalled() -> None:
    """A message out (running, or nak'ed to come back later) or nothing pending is normal."""
    assert stall_check(41, pending=3, ack_pending=1, delivered=41) == (None, False)
    assert stall_check(41, pending=0, ack_pending=0, delivered=41) == (None, False)
    assert stall_check(41, pending=1, ack_pending=0, delivered=None) == (None, False)
