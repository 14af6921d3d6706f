"""Event channels through the hub: binding (pending at once), masking, dropped events,
reconnection."""

from __future__ import annotations

import errno
import json
import select
from collections.abc import Iterator

import pytest

from vchansim.backends.memory import MemoryBackend, MemoryHypervisor
from vchansim.backends.shm import ShmBackend, ShmEvents
from vchansim.errors import BackendError
from vchansim.hub import Op, open_hub
from vchansim.leaks import assert_no_leaks
from vchansim.rundir import RunDir

WAIT = 2.0


@pytest.fixture
def server(rundir: RunDir) -> Iterator[ShmEvents]:
    """Domain 1's event handle."""
    events = ShmBackend(1).events()
    yield events
    events.close()


@pytest.fixture
def client(rundir: RunDir) -> Iterator[ShmEvents]:
    """Domain 2's event handle."""
    events = ShmBackend(2).events()
    yield events
    events.close()


def _ports(rundir: RunDir) -> list[dict[str, object]]:
    with open_hub(rundir, 0) as conn:
        return json.loads(conn.call(Op.STATE).text)["ports"]


def test_bind_notify_pending_unmask_both_ways(server: ShmEvents, client: ShmEvents) -> None:
    sport = server.bind_unbound(2)
    cport = client.bind_interdomain(1, sport)
    assert sport == 1 and cport == 1  # ports are per domain, numbered from 1
    client.notify(cport)
    assert server.pending(WAIT) == sport
    server.unmask(sport)
    server.notify(sport)
    assert client.pending(WAIT) == cport
    client.unmask(cport)
    assert server.pending(0) is None and client.pending(0) is None


def test_pending_times_out(server: ShmEvents) -> None:
    server.bind_unbound(2)
    assert server.pending(0.05) is None


def test_a_port_fires_once_until_unmasked(server: ShmEvents, client: ShmEvents) -> None:
    sport = server.bind_unbound(2)
    cport = client.bind_interdomain(1, sport)
    client.notify(cport)
    assert server.pending(WAIT) == sport
    client.notify(cport)
    client.notify(cport)
    assert server.pending(0) is None  # masked: the events wait
    assert not select.select([server.fileno()], [], [], 0)[0]
    server.unmask(sport)
    assert select.select([server.fileno()], [], [], WAIT)[0]  # fires at once on unmask
    assert server.pending(0) == sport
    server.unmask(sport)
    assert server.pending(0) is None  # the two events were coalesced into one


@pytest.mark.parametrize("sent_before", [0, 2])
def test_a_freshly_bound_port_starts_pending_once(
    server: ShmEvents, client: ShmEvents, sent_before: int
) -> None:
    """As Xen's evtchn_bind_interdomain(): the new local port is set pending, whatever
    the unbound end rang before (those events themselves were dropped)."""
    sport = server.bind_unbound(2)
    for _ in range(sent_before):
        server.notify(sport)
    cport = client.bind_interdomain(1, sport)
    assert client.pending(0) == cport
    client.unmask(cport)
    assert client.pending(0) is None  # one pending bit, not one per event sent before
    assert server.pending(0) is None  # the bind set only the binder's port
    server.notify(sport)
    assert client.pending(WAIT) == cport


def test_memory_backend_binds_pending_too() -> None:
    """The in-process backend follows the same rule as the hub."""
    hv = MemoryHypervisor()
    one, two = MemoryBackend(1, hypervisor=hv).events(), MemoryBackend(2, hypervisor=hv).events()
    try:
        sport = one.bind_unbound(2)
        cport = two.bind_interdomain(1, sport)
        assert two.pending(0) == cport
        two.unmask(cport)
        assert two.pending(0) is None and one.pending(0) is None
    finally:
        one.close()
        two.close()


def test_notify_after_peer_is_gone_is_dropped(
    rundir: RunDir, server: ShmEvents, client: ShmEvents
) -> None:
    sport = server.bind_unbound(2)
    cport = client.bind_interdomain(1, sport)
    client.unbind(cport)
    server.notify(sport)  # no error, as on Xen
    [port] = _ports(rundir)
    assert port["state"] == "unbound" and port["remote"] == 2
    again = ShmBackend(2).events()
    try:
        port2 = again.bind_interdomain(1, sport)
        assert again.pending(0) == port2  # pending from the bind ...
        again.unmask(port2)
        assert again.pending(0) is None  # ... once: the notify into the void was not kept
        server.notify(sport)
        assert again.pending(WAIT) == port2
    finally:
        again.close()


def test_client_can_reconnect_to_the_same_unbound_port(
    server: ShmEvents, client: ShmEvents
) -> None:
    sport = server.bind_unbound(2)
    client.bind_interdomain(1, sport)
    client.close()
    for _ in range(3):
        successor = ShmBackend(2).events()
        try:
            port = successor.bind_interdomain(1, sport)
            successor.notify(port)
            assert server.pending(WAIT) == sport
            server.unmask(sport)
            server.notify(sport)
            assert successor.pending(WAIT) == port
        finally:
            successor.close()


def test_binding_rules(server: ShmEvents, client: ShmEvents) -> None:
    sport = server.bind_unbound(2)
    stranger, second = ShmBackend(3).events(), ShmBackend(2).events()
    try:
        with pytest.raises(BackendError, match="waits for domain 2, not 3") as info:
            stranger.bind_interdomain(1, sport)
        assert info.value.errno == errno.EINVAL
        client.bind_interdomain(1, sport)
        with pytest.raises(BackendError, match="already bound"):
            second.bind_interdomain(1, sport)
        with pytest.raises(BackendError, match="domain 1 has no port 9"):
            stranger.bind_interdomain(1, 9)
    finally:
        stranger.close()
        second.close()


def test_unknown_ports_are_refused(server: ShmEvents) -> None:
    for action in (server.notify, server.unbind):
        with pytest.raises(BackendError, match="port 5 is not bound on this handle") as info:
            action(5)
        assert info.value.errno == errno.ENOTCONN
    server.unmask(5)  # ignored, as the evtchn device ignores foreign ports


def test_server_leaving_returns_client_end_to_unbound(
    rundir: RunDir, server: ShmEvents, client: ShmEvents
) -> None:
    sport = server.bind_unbound(2)
    cport = client.bind_interdomain(1, sport)
    server.unbind(sport)
    client.notify(cport)  # dropped silently
    [port] = _ports(rundir)
    assert (port["domid"], port["state"], port["remote"]) == (2, "unbound", 1)


def test_close_unbinds_everything(rundir: RunDir) -> None:
    one, two = ShmBackend(1).events(), ShmBackend(2).events()
    ports = [one.bind_unbound(2) for _ in range(3)]
    two.bind_interdomain(1, ports[1])
    assert len(_ports(rundir)) == 4
    one.close()
    two.close()
    assert_no_leaks(rundir)
