"""Per-channel event statistics: each end counts what it sends in a shared page that
observers map read-only (hub op EVT_STATS)."""

from __future__ import annotations

import mmap
import os

import procs
import pytest

from vchansim.backends.shm import ShmBackend
from vchansim.hub.events import STATS_SIZE
from vchansim.hub.launcher import open_hub
from vchansim.hub.protocol import Op

rundir = procs.rundir


def _observe(rundir, domid: int, port: int) -> tuple[int, tuple[int, int]]:
    """(side of ``port``, (events sent by side 0, by side 1)) through a read-only mapping."""
    with open_hub(rundir, 0) as conn:
        reply = conn.call(Op.EVT_STATS, domid, port)
    (fd,) = reply.fds
    try:
        page = mmap.mmap(fd, STATS_SIZE, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    with page, memoryview(page) as view, view[:16].cast("Q") as counters:
        return reply.values[0], (counters[0], counters[1])


def test_both_directions_are_counted_and_visible_read_only(rundir):
    server_events = ShmBackend(1, rundir=rundir).events()
    client_events = ShmBackend(0, rundir=rundir).events()
    sport = server_events.bind_unbound(0)
    cport = client_events.bind_interdomain(1, sport)
    for _ in range(3):
        server_events.notify(sport)
    for _ in range(5):
        client_events.notify(cport)
    assert server_events.events_sent(sport) == (3, 5)
    assert client_events.events_sent(cport) == (5, 3)
    assert _observe(rundir, 1, sport) == (0, (3, 5))
    assert _observe(rundir, 0, cport) == (1, (3, 5))
    with open_hub(rundir, 0) as conn:
        (fd,) = conn.call(Op.EVT_STATS, 1, sport).fds
    try:
        with pytest.raises(PermissionError):
            mmap.mmap(fd, STATS_SIZE)  # read-write: refused, the descriptor is read-only
    finally:
        os.close(fd)
    client_events.close()
    server_events.close()


def test_unmap_notify_events_count_for_the_end_that_went_away(rundir):
    server = ShmBackend(1, rundir=rundir)
    events, grants = server.events(), server.grants()
    port = events.bind_unbound(0)
    client_events = ShmBackend(0, rundir=rundir).events()
    cport = client_events.bind_interdomain(1, port)
    page = grants.share(0, 1)
    grants.set_unmap_notify(page, 21, port)
    page.close()  # the notify fires: byte cleared, one event sent on the server's behalf
    assert client_events.pending(5.0) == cport
    assert client_events.events_sent(cport) == (0, 1)
    grants.close()
    events.close()
    client_events.close()
