"""Xen's grant and event-channel rules on their own, with a recording allocator and
doorbell: what the hub and the memory backend both build on."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vchansim.xen import MAX_GRANT_PAGES, RequestError
from vchansim.xenmodel.events import (
    EVTCHNSTAT_CLOSED,
    EVTCHNSTAT_INTERDOMAIN,
    EVTCHNSTAT_UNBOUND,
    EventChannels,
    Port,
)
from vchansim.xenmodel.grants import GrantTable


class Pages:
    """A run of pages as the allocator made it (identity is what matters)."""

    def __init__(self, count: int) -> None:
        self.count = count


class Bell:
    """A doorbell that records the ports it was rung for."""

    def __init__(self) -> None:
        self.rung: list[int] = []

    def ring(self, port: int) -> None:
        self.rung.append(port)


def refused(err: int) -> Any:
    """Expect Xen's refusal with errno ``err``."""
    return pytest.raises(RequestError, check=lambda exc: exc.err == err)


def test_a_share_takes_the_lowest_free_refs_and_one_run_of_pages():
    made: list[Pages] = []
    table = GrantTable(lambda n: made.append(Pages(n)) or made[-1], limit=8)
    first = table.share(1, 2, 3, writable=True)
    assert [g.ref for g in first] == [1, 2, 3] and [g.page for g in first] == [0, 1, 2]
    assert len(made) == 1 and all(g.pages is made[0] for g in first)
    table.revoke(first[1:2])
    assert [g.ref for g in table.share(1, 2, 2, writable=False)] == [2, 4]


def test_a_full_table_refuses_before_allocating():
    made: list[int] = []
    table = GrantTable(lambda n: made.append(n), limit=4)
    table.share(1, 2, 3, writable=True)
    with refused(errno.ENOSPC):
        table.share(1, 2, 2, writable=True)
    assert made == [3]
    table.share(2, 1, 4, writable=True)  # the limit is per domain


@pytest.mark.parametrize("count", [0, MAX_GRANT_PAGES + 1])
def test_a_share_outside_one_to_max_pages_is_einval(count):
    with refused(errno.EINVAL):
        GrantTable(Pages).share(1, 2, count, writable=True)


def test_map_rules_in_xens_order():
    table = GrantTable(Pages)
    rw = table.share(1, 2, 1, writable=True)[0]
    ro = table.share(1, 2, 1, writable=False)[0]
    assert table.map(2, 1, [rw.ref, ro.ref], writable=False) == [rw, ro]
    with refused(errno.EPERM):
        table.map(3, 1, [rw.ref], writable=False)  # granted to 2, not 3
    with refused(errno.EACCES):
        table.map(2, 1, [ro.ref], writable=True)
    table.revoke([rw])
    with refused(errno.EINVAL):
        table.map(2, 1, [rw.ref], writable=False)
    assert [g.ref for g in table] == [ro.ref] and table.domains() == {1}


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 5)), max_size=40))
def test_refs_stay_unique_lowest_free_and_within_the_limit(ops):
    table = GrantTable(Pages, limit=16)
    held: list[list] = []
    for share, count in ops:
        if share:
            live = {g.ref for g in table}
            if len(live) + count > 16:
                with refused(errno.ENOSPC):
                    table.share(1, 2, count, writable=True)
                continue
            expected = sorted(set(range(1, 17 + count)) - live)[:count]
            grants = table.share(1, 2, count, writable=True)
            assert [g.ref for g in grants] == expected
            held.append(grants)
        elif held:
            table.revoke(held.pop(count % len(held)))
        refs = [g.ref for g in table]
        assert len(refs) == len(set(refs)) <= 16


def pair(channels: EventChannels[Bell]) -> tuple[Port[Bell], Port[Bell]]:
    waiting = channels.bind_unbound(1, 2, Bell())
    return waiting, channels.bind_interdomain(2, 1, waiting.number, lambda other: Bell())


def test_a_fresh_interdomain_port_starts_pending_and_events_reach_the_peer():
    channels: EventChannels[Bell] = EventChannels()
    waiting, bound = pair(channels)
    assert bound.bell.rung == [bound.number] and waiting.bell.rung == []
    assert (waiting.state, bound.state) == ("interdomain", "interdomain")
    channels.send(1, waiting.number)
    channels.send(2, bound.number)
    assert waiting.bell.rung == [waiting.number]
    assert bound.bell.rung == [bound.number, bound.number]


def test_an_end_whose_peer_left_waits_for_that_domain_again():
    channels: EventChannels[Bell] = EventChannels()
    waiting, bound = pair(channels)
    channels.unbind(bound)
    assert waiting.state == "unbound" and waiting.remote == 2
    channels.send(1, waiting.number)  # dropped: nobody is bound
    assert waiting.bell.rung == []
    again = channels.bind_interdomain(2, 1, waiting.number, lambda other: Bell())
    assert again.peer is waiting and again.number == bound.number  # lowest free number


def test_binding_rules_refuse_without_making_a_doorbell():
    channels: EventChannels[Bell] = EventChannels(limit=2)
    waiting, _ = pair(channels)

    def no_bell(other: Port[Bell]) -> Bell:
        raise AssertionError("a refused bind made a doorbell")

    with refused(errno.EINVAL):
        channels.bind_interdomain(2, 1, waiting.number, no_bell)  # already bound
    offered = channels.bind_unbound(1, 3, Bell())
    with refused(errno.EINVAL):
        channels.bind_interdomain(2, 1, offered.number, no_bell)  # offered to domain 3
    with refused(errno.EINVAL):
        channels.bind_interdomain(2, 1, 99, no_bell)
    with refused(errno.ENOSPC):
        channels.bind_unbound(1, 3, Bell())  # domain 1 holds its 2 ports
    assert channels.domains() == {1, 2}


def test_status_names_each_state_and_refuses_numbers_past_the_limit():
    channels: EventChannels[Bell] = EventChannels(limit=8)
    waiting, bound = pair(channels)
    offered = channels.bind_unbound(1, 3, Bell())
    assert channels.status(1, waiting.number) == (EVTCHNSTAT_INTERDOMAIN, 2, bound.number)
    assert channels.status(1, offered.number) == (EVTCHNSTAT_UNBOUND, 3, 0)
    assert channels.status(1, 0) == channels.status(1, 8) == (EVTCHNSTAT_CLOSED, 0, 0)
    with refused(errno.EINVAL):
        channels.status(1, 9)
