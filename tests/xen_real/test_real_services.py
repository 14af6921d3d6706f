"""The xen backend's three services against the real hypervisor, kernel and xenstored,
checked against the promises in ``vchansim/backends/base.py``."""

from __future__ import annotations

import select

import pytest

from vchansim.backends.xen import XenBackend
from vchansim.channel import Vchan
from vchansim.errors import GrantError, StoreError

EVENT_WAIT = 10.0  # generous: the CPU is emulated
QUIET = 0.3  # how long "nothing arrives" is given to prove itself


@pytest.fixture
def backend() -> XenBackend:
    return XenBackend()


def test_own_domid_comes_from_xenstore(backend: XenBackend) -> None:
    with backend.store() as xs:
        assert xs.read("domid") == b"0"
    assert backend.domid == 0


def test_a_port_fires_once_until_unmasked_and_keeps_what_came_meanwhile(backend) -> None:
    a, b = backend.events(), backend.events()
    try:
        pa = a.bind_unbound(0)
        pb = b.bind_interdomain(0, pa)
        # Xen marks a freshly bound interdomain port pending (events sent to the unbound
        # port were dropped, so the binder is told to look), and only once.
        assert b.pending(EVENT_WAIT) == pb
        b.unmask(pb)
        assert b.pending(QUIET) is None

        a.notify(pa)
        assert b.pending(EVENT_WAIT) == pb
        a.notify(pa)  # arrives while masked: must not be delivered yet...
        assert b.pending(QUIET) is None
        b.unmask(pb)  # ...but must not be lost either
        assert b.pending(EVENT_WAIT) == pb
        b.unmask(pb)

        b.notify(pb)
        assert select.select([a.fileno()], [], [], EVENT_WAIT)[0] == [a.fileno()]
        assert a.pending(0) == pa
        a.unmask(pa)

        b.unbind(pb)
        a.notify(pa)  # the peer is gone: dropped silently, as Xen does
        assert a.pending(QUIET) is None
    finally:
        a.close()
        b.close()


def test_shared_pages_are_seen_through_the_mapping_and_rules_hold(backend) -> None:
    # dom0 mapping its own grants (Linux's loopback case) in one process.
    grants = backend.grants()
    try:
        shared = grants.share(0, 2)
        assert len(shared.refs) == 2 and all(ref > 0 for ref in shared.refs)
        mapped = grants.map(0, shared.refs)
        shared.buf[4095:4097] = b"ab"  # across the page boundary
        assert bytes(mapped.buf[4095:4097]) == b"ab"
        mapped.buf[0] = 7
        assert shared.buf[0] == 7

        readonly = grants.map(0, shared.refs[:1], writable=False)
        assert readonly.buf.readonly and readonly.buf[0] == 7

        protected = grants.share(0, 1, writable=False)
        with pytest.raises(GrantError):
            grants.map(0, protected.refs, writable=True)
        for mapping in (readonly, mapped, shared, protected):
            mapping.close()
    finally:
        grants.close()


def test_server_publishes_with_permissions_and_cleans_up(backend, xs_path) -> None:
    chan = Vchan.server(backend, 0, xs_path)
    with backend.store() as xs:
        ring_ref = int(xs.read(f"{xs_path}/ring-ref"))
        port = int(xs.read(f"{xs_path}/event-channel"))
        perms = [(p.access, p.domid) for p in xs.get_perms(f"{xs_path}/ring-ref")]
    assert ring_ref > 0
    assert port == chan.port
    assert perms == [("n", 0), ("r", 0)]
    chan.close()
    with backend.store() as xs, pytest.raises(StoreError):
        xs.read(f"{xs_path}/ring-ref")


def test_the_kernel_xenbus_device_carries_xenstore_too(monkeypatch, start, record, xs_path):
    """xs_open's second choice: everything over /dev/xen/xenbus instead of the socket."""
    monkeypatch.setenv("XENSTORED_PATH", "/dev/xen/xenbus")
    backend = XenBackend()
    with backend.store() as xs:
        assert xs.read("domid") == b"0"
    client = start("c", "-w", 30, "client", 0, xs_path, "ping", 20, 1)
    with Vchan.server(backend, 0, xs_path) as chan:
        chan.timeout = 60  # a client that never comes fails the test instead of hanging it
        served = 0
        for data in chan:
            chan.write(data)
            served += len(data)
    report = client.result()
    record(report)
    assert served == 20
