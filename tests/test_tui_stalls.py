"""Who waits for whom: the verdicts on the ends' sleeps, from page states and wait words.

The states here are the ones a vchan reaches when a wake-up goes missing; scenario runs
that produce them for real (live and replayed) are in test_tui_stall_runs.py.
"""

from __future__ import annotations

import pytest

from vchansim import layout
from vchansim.layout import PageState
from vchansim.statspage import Blocked, Wait
from vchansim.tui.frames import FrameBuilder
from vchansim.tui.stalls import ENDED_KEPT, GRACE

W, R = layout.NOTIFY_WRITE, layout.NOTIFY_READ
RING = 1024  # left ring: order 10; right ring: order 11
LATE = GRACE + 0.1


def page(
    left: int = 0,
    right: int = 0,
    live: tuple[int, int] = (1, 1),
    asked: tuple[int, int] = (0, 0),
) -> PageState:
    """Bytes in the left (client -> server) and right rings; (client, server) live bytes;
    (what the server asked for, what the client asked for)."""
    server_asked, client_asked = asked
    return PageState(0, left, 0, right, 10, 11, live[0], live[1], server_asked, client_asked)


def judge(state: PageState, server: Wait | None, client: Wait | None, now: float = LATE):
    """The verdicts on ``state`` held from the start of the sleeps (time 0) until ``now``."""
    builder = FrameBuilder()
    builder.feed(0.0, state, None, (server, client))
    frame = builder.feed(now, state, None, (server, client))
    return [s.name for s in frame.stalls], frame


def asleep(blocked: Blocked, since: float = 0.0) -> Wait:
    return Wait(blocked, since)


def test_a_reader_asleep_with_data_whose_request_was_taken_lost_its_wakeup() -> None:
    names, frame = judge(page(left=100), asleep(Blocked.READ), None)
    assert names == ["lost-wakeup"]
    assert frame.stalls[0].severity == "hang"
    assert "the server sleeps" in frame.stalls[0].text and "100 B to read" in frame.stalls[0].text
    # Still asking: the writer has not written since, so the wait is a fair one.
    assert judge(page(asked=(W, 0)), asleep(Blocked.READ), None)[0] == []


def test_a_writer_asleep_with_room_whose_request_was_taken_lost_its_wakeup() -> None:
    names, frame = judge(page(left=RING - 10), None, asleep(Blocked.WRITE))
    assert names == ["lost-wakeup"] and "10 B free" in frame.stalls[0].text


def test_sleeping_without_asking_for_a_wakeup_is_flagged() -> None:
    assert judge(page(), asleep(Blocked.READ), None)[0] == ["unasked-wait"]
    assert judge(page(right=2 * RING), asleep(Blocked.WRITE), None)[0] == ["unasked-wait"]


def test_sleeping_on_after_the_peer_closed_is_flagged() -> None:
    names, frame = judge(page(live=(0, 1), asked=(W, 0)), asleep(Blocked.READ), None)
    assert names == ["missed-close"] and "the client closed" in frame.stalls[0].text


def test_a_killed_end_leaves_its_word_set_but_is_not_judged() -> None:
    names, frame = judge(page(live=(1, 0), asked=(0, W)), asleep(Blocked.READ), None)
    assert names == [] and frame.waits == (None, None)


def test_both_ends_asleep_on_their_requests_is_a_deadlock() -> None:
    state = page(right=2 * RING, asked=(R, W))  # server writes a full ring, client reads left
    names, _ = judge(state, asleep(Blocked.WRITE), asleep(Blocked.READ))
    assert names == ["deadlock"]


def test_a_writer_waiting_for_a_reader_that_is_busy_is_a_stall_not_a_hang() -> None:
    names, frame = judge(page(right=2 * RING, asked=(R, 0)), asleep(Blocked.WRITE), None)
    assert names == ["consumer-stalled"] and frame.stalls[0].severity == "stall"


def test_young_sleeps_are_not_judged() -> None:
    assert judge(page(left=100), asleep(Blocked.READ), None, now=GRACE / 2)[0] == []


def test_an_old_sleep_whose_request_was_just_taken_is_a_wakeup_in_flight() -> None:
    """What must last is the stalled state, not the sleep: the writer taking the request
    of a reader asleep for seconds has its event on the way."""
    builder = FrameBuilder()
    wait = asleep(Blocked.READ, since=0.0)
    builder.feed(5.0, page(asked=(W, 0)), None, (wait, None))
    taken = builder.feed(5.001, page(left=100), None, (wait, None))
    assert taken.stalls == ()
    still = builder.feed(5.001 + 2 * GRACE, page(left=100), None, (wait, None))
    assert [s.name for s in still.stalls] == ["lost-wakeup"]
    assert "sleeps 5.2 s reading with 100 B to read" in still.stalls[0].text


def test_an_unexplained_sleep_is_read_by_its_request_and_remembered() -> None:
    """The C library only says it waits for an event: the request it made says which way,
    and the verdict stands after the peer took the request."""
    builder = FrameBuilder()
    wait = asleep(Blocked.EVENT, since=1.0)
    first = builder.feed(1.05, page(asked=(W, 0)), None, (wait, None))
    assert first.waits is not None and first.waits[0] is not None
    assert first.waits[0].direction == "read" and first.stalls == ()
    taken = builder.feed(1.0 + LATE, page(left=64), None, (wait, None))
    later = builder.feed(1.0 + LATE + 2 * GRACE, page(left=64), None, (wait, None))
    assert taken.stalls == () and [s.name for s in later.stalls] == ["lost-wakeup"]
    # A new sleep starts with nothing learned.
    fresh = builder.feed(3.0 + LATE, page(left=64), None, (asleep(Blocked.EVENT, 3.0), None))
    assert fresh.waits is not None and fresh.waits[0] is not None
    assert fresh.waits[0].direction is None and fresh.stalls == ()


@pytest.mark.parametrize("waits", [None, (None, None)])
def test_without_sleeps_there_is_no_verdict(waits) -> None:
    frame = FrameBuilder().feed(5.0, page(left=100), None, waits)
    assert frame.stalls == () and frame.waits == waits


def test_a_verdict_whose_state_ends_is_kept_with_when_it_arose_and_ended() -> None:
    """A short hang stays listed after it is over (newest first, the latest of each
    name, at most ENDED_KEPT); a stall that never lasted GRACE is not."""
    builder = FrameBuilder()
    unasked = page(right=2048)  # the server sleeps on a full ring without asking
    closed = page(right=2048, live=(0, 1), asked=(R, 0))  # ... after its client closed
    fine = page(right=1024, asked=(R, 0))
    writing = (asleep(Blocked.WRITE, 0.0), None)
    for t in (0.0, 0.1, 0.2):
        frame = builder.feed(t, unasked, None, writing)
    assert [s.name for s in frame.stalls] == ["unasked-wait"] and not frame.ended
    frame = builder.feed(0.3, fine, None, (None, None))
    assert not frame.stalls
    (seen,) = frame.ended
    assert (seen.name, seen.severity, seen.arose, seen.flagged, seen.ended) == (
        "unasked-wait",
        "hang",
        0.0,
        0.1,
        0.3,
    )
    assert seen.age == pytest.approx(0.1)  # the sleep was 0.1 s old when first flagged
    assert seen.describe() == "✖ unasked-wait from t 0.00 to 0.30 s, now over"
    # A missed close for 0.05 s only: never given, so never kept.
    builder.feed(0.4, closed, None, (asleep(Blocked.WRITE, 0.4), None))
    frame = builder.feed(0.45, fine, None, (None, None))
    assert [s.name for s in frame.ended] == ["unasked-wait"]
    # Later, the same hang again: it replaces the earlier one, and the list stays short.
    for t in (1.0, 1.2):
        builder.feed(t, closed, None, (asleep(Blocked.WRITE, 1.0), None))
    for t in (2.0, 2.2):
        builder.feed(t, unasked, None, (asleep(Blocked.WRITE, 2.0), None))
    frame = builder.feed(2.3, fine, None, (None, None))
    assert [(s.name, s.arose) for s in frame.ended] == [
        ("unasked-wait", 2.0),
        ("missed-close", 1.0),
    ]
    assert len(frame.ended) <= ENDED_KEPT
