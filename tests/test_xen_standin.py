"""The xen backend's logic without a hypervisor, against the recording stand-in of
``tests/xen_standin.py`` injected through ``XenBackend(devices=...)``.

What is checked is what the backend asks of the kernel and of xenstored: ioctl arguments
and their order, mmap offsets and modes, notify registration after event binding, the
XenStore conversation of docs/protocol.md §7.9 -- and that two backends then really move data
through the shared pages.  Real-hypervisor runs of the same code are in tests/xen_real.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
from helpers.xen_standin import StandInXen

from vchansim.backends.xen import XenBackend, xenstore_paths
from vchansim.channel import Vchan
from vchansim.errors import BackendError, ConfigError, GrantError

PATH = "/local/domain/0/data/vchan/1/7"


@pytest.fixture
def xen(tmp_path: Path):
    with StandInXen(tmp_path) as machine:
        yield machine


def first(xen: StandInXen, domid: int, op: str, **match):
    """The first recorded call of ``op`` (device:op) by ``domid`` whose fields match."""
    for call in xen.calls:
        same = call.domid == domid and f"{call.device}:{call.op}" == op
        if same and all(call.fields.get(k) == v for k, v in match.items()):
            return call
    raise AssertionError(f"no {op} {match} by dom{domid} in {xen.ops(domid)}")


def position(xen: StandInXen, domid: int, op: str, **match) -> int:
    return xen.calls.index(first(xen, domid, op, **match))


# -- construction ------------------------------------------------------------------------


def test_without_xen_devices_the_error_names_the_device_and_the_shm_backend(xen):
    with pytest.raises(BackendError) as info:
        XenBackend(devices=xen.devices(0, missing=("/dev/xen/gntdev",)))
    assert "/dev/xen/gntdev" in str(info.value) and "'shm'" in str(info.value)


@pytest.mark.skipif(os.path.exists("/dev/xen/evtchn"), reason="this machine is a Xen domain")
def test_on_this_machine_the_real_devices_are_missing():
    with pytest.raises(BackendError, match=r"/dev/xen/evtchn.*shm"):
        XenBackend()


def test_own_domid_is_read_from_xenstore(xen):
    assert XenBackend(devices=xen.devices(0)).domid == 0
    guest = XenBackend(devices=xen.devices(1))
    assert guest.domid == 1
    # A guest has no daemon socket: xs_open falls back to the kernel's xenbus device.
    tried = [c.fields["path"] for c in xen.calls if c.domid == 1 and c.op == "connect"]
    assert tried[:2] == ["/var/run/xenstored/socket", "/dev/xen/xenbus"]


def test_a_domid_other_than_its_own_is_refused_naming_both(xen):
    assert XenBackend(0, devices=xen.devices(0)).domid == 0
    with pytest.raises(ConfigError) as info:
        XenBackend(1, devices=xen.devices(0))
    message = str(info.value)
    assert "\n" not in message
    assert "runs in domain 0" in message and "act as domain 1" in message
    with pytest.raises(ConfigError, match=r"runs in domain 1.*act as domain 0"):
        XenBackend(0, devices=xen.devices(1))


@pytest.mark.parametrize(
    ("env", "xenbus", "expected"),
    [
        ({}, True, ("/var/run/xenstored/socket", "/dev/xen/xenbus")),
        ({}, False, ("/var/run/xenstored/socket", "/proc/xen/xenbus")),
        ({"XENSTORED_RUNDIR": "/x"}, True, ("/x/socket", "/dev/xen/xenbus")),
        ({"XENSTORED_PATH": "/p", "XENSTORED_RUNDIR": "/x"}, True, ("/p", "/p")),
    ],
)
def test_xenstore_is_looked_for_where_libxenstore_looks(xen, env, xenbus, expected):
    devices = xen.devices(0, missing=() if xenbus else ("/dev/xen/xenbus",))
    assert xenstore_paths(env, devices) == expected


def test_unreachable_xenstore_names_both_places(xen):
    with pytest.raises(BackendError, match=r"/var/run/xenstored/socket.*/dev/xen/xenbus"):
        XenBackend(devices=xen.devices(0, store_paths=()))


# -- server_init / client_init as the devices see them ---------------------------------


def test_server_init_issues_libxenvchans_calls_in_order(xen):
    backend = XenBackend(0, devices=xen.devices(0))
    chan = Vchan.server(backend, 1, PATH, 8192, 65536)  # left: 2 pages, right: 16 pages
    bind = first(xen, 0, "evtchn:BIND_UNBOUND_PORT", remote_domain=1)
    port = bind.fields["port"]
    assert chan.port == port
    ctrl = first(xen, 0, "gntalloc:ALLOC_GREF", count=1)
    assert ctrl.fields["domid"] == 1 and ctrl.fields["flags"] == 1
    assert ctrl.fields["arg_len"] == 24
    index = ctrl.fields["index"]
    notify = first(xen, 0, "gntalloc:SET_UNMAP_NOTIFY")
    assert notify.fields == {"index": index + 21, "action": 3, "port": port}
    order = [
        position(xen, 0, "evtchn:BIND_UNBOUND_PORT"),
        position(xen, 0, "evtchn:write"),  # unmasked once, as libxenvchan does
        position(xen, 0, "gntalloc:mmap", offset=index, length=4096, writable=True),
        position(xen, 0, "gntalloc:SET_UNMAP_NOTIFY"),
        position(xen, 0, "gntalloc:DEALLOC_GREF", index=index, count=1),
    ]
    assert order == sorted(order), xen.ops(0)
    left = first(xen, 0, "gntalloc:ALLOC_GREF", count=2)
    right = first(xen, 0, "gntalloc:ALLOC_GREF", count=16)
    assert (left.fields["arg_len"], right.fields["arg_len"]) == (24, 16 + 4 * 16)
    # Each allocation is mapped whole at its own offset; the page refs land in grants[].
    for alloc in (left, right):
        first(
            xen,
            0,
            "gntalloc:mmap",
            offset=alloc.fields["index"],
            length=4096 * alloc.fields["count"],
        )
    page = chan._page  # the control page as the server wrote it
    grants = page[24 : 24 + 4 * 18].cast("I").tolist()
    assert grants == left.fields["refs"] + right.fields["refs"]
    chan.close()


def test_client_init_maps_what_the_server_published(xen):
    server = Vchan.server(XenBackend(0, devices=xen.devices(0)), 1, PATH, 8192, 65536)
    client = Vchan.client(XenBackend(1, devices=xen.devices(1)), 0, PATH)
    alloc = [c for c in xen.calls if c.domid == 0 and c.op == "ALLOC_GREF"]
    bind = first(xen, 1, "evtchn:BIND_INTERDOMAIN", remote_domain=0, remote_port=server.port)
    ctrl = first(xen, 1, "gntdev:MAP_GRANT_REF", count=1)
    assert ctrl.fields["refs"] == [(0, alloc[0].fields["refs"][0])]
    assert ctrl.fields["arg_len"] == 24
    first(xen, 1, "gntdev:mmap", offset=ctrl.fields["index"], length=4096, writable=True)
    notify = first(xen, 1, "gntdev:SET_UNMAP_NOTIFY")
    assert notify.fields == {
        "index": ctrl.fields["index"] + 20,
        "action": 3,
        "port": bind.fields["port"],
    }
    # The client writes left (2 pages, read-write) and reads right (16 pages, read-only).
    left = first(xen, 1, "gntdev:MAP_GRANT_REF", count=2)
    right = first(xen, 1, "gntdev:MAP_GRANT_REF", count=16)
    assert left.fields["refs"] == [(0, r) for r in alloc[1].fields["refs"]]
    assert right.fields["arg_len"] == 16 + 8 * 16
    first(xen, 1, "gntdev:mmap", offset=left.fields["index"], writable=True)
    first(xen, 1, "gntdev:mmap", offset=right.fields["index"], writable=False)
    assert client.read_ring.buf.readonly
    order = [
        position(xen, 1, "evtchn:BIND_INTERDOMAIN"),
        position(xen, 1, "gntdev:SET_UNMAP_NOTIFY"),
        position(xen, 1, "evtchn:NOTIFY", port=bind.fields["port"]),  # "I am here"
    ]
    assert order == sorted(order)
    client.close()
    server.close()


def test_xenstore_conversations_are_those_of_section_7_9(xen):
    server = Vchan.server(XenBackend(0, devices=xen.devices(0)), 1, PATH)
    client = Vchan.client(XenBackend(1, devices=xen.devices(1)), 0, PATH)
    client.close()
    server.close()
    # Each backend first asks its domain id once, on a connection of its own.
    own_domid = [("READ", 0, [b"domid", b""])]
    backend_srv, *srv = xen.recorders[0].wait_finished(3)  # + server init, server close
    backend_cli, *cli = xen.recorders[1].wait_finished(2)  # + client init
    assert backend_srv.summary() == backend_cli.summary() == own_domid
    init = srv[0].summary()
    tx = init[2][1]
    assert tx != 0
    assert init == [
        ("READ", 0, [b"domid", b""]),
        ("TRANSACTION_START", 0, [b"", b""]),
        ("WRITE", tx, [f"{PATH}/ring-ref".encode(), init[2][2][1]]),
        ("SET_PERMS", tx, [f"{PATH}/ring-ref".encode(), b"n0", b"r1", b""]),
        ("WRITE", tx, [f"{PATH}/event-channel".encode(), str(server.port).encode()]),
        ("SET_PERMS", tx, [f"{PATH}/event-channel".encode(), b"n0", b"r1", b""]),
        ("TRANSACTION_END", tx, [b"T", b""]),
    ]
    assert cli[0].summary() == [
        ("READ", 0, [f"{PATH}/ring-ref".encode(), b""]),
        ("READ", 0, [f"{PATH}/event-channel".encode(), b""]),
    ]
    assert srv[1].summary() == [("RM", 0, [PATH.encode(), b""])]


# -- running over the stand-in ---------------------------------------------------------


def test_two_backends_move_data_both_ways_through_shared_pages(xen):
    payload = os.urandom(300_000)
    server = Vchan.server(XenBackend(0, devices=xen.devices(0)), 1, PATH, 4096, 16384)
    client = Vchan.client(XenBackend(1, devices=xen.devices(1)), 0, PATH)
    for chan in (server, client):
        chan.timeout = 30
    received: dict[str, bytes] = {}

    def serve() -> None:  # echo back whatever arrives
        data = bytearray()
        while len(data) < len(payload):
            chunk = server.read(65536)
            server.write(chunk)
            data += chunk
        received["server"] = bytes(data)

    echo = threading.Thread(target=serve)
    echo.start()
    back = bytearray()
    sent = 0
    client.blocking = False
    while len(back) < len(payload):
        moved = client.write(payload[sent : sent + 4096]) if sent < len(payload) else 0
        sent += moved
        got = client.read(65536)
        back += got
        if not moved and not got:
            client.wait(1.0)
    echo.join(30)
    assert hashlib.sha256(received["server"]).digest() == hashlib.sha256(payload).digest()
    assert hashlib.sha256(back).digest() == hashlib.sha256(payload).digest()
    client.close()
    # The client's gntdev unmap-notify cleared cli_live and kicked the server.
    assert server.wait(5.0)
    assert server.is_open() == 0
    server.close()


def test_closing_unmaps_before_releasing_grants(xen):
    server = Vchan.server(XenBackend(0, devices=xen.devices(0)), 1, PATH, 8192, 0)
    client = Vchan.client(XenBackend(1, devices=xen.devices(1)), 0, PATH)
    client.close()
    ops = xen.ops(1)[-7:]
    assert ops[:2] == ["gntdev:munmap", "gntdev:UNMAP_GRANT_REF"]  # the left ring
    assert ops[2:4] == ["gntdev:munmap", "gntdev:UNMAP_GRANT_REF"]  # the control page
    assert ops[4:] == ["evtchn:NOTIFY", "evtchn:close", "gntdev:close"]
    server.close()
    ring = first(xen, 0, "gntalloc:ALLOC_GREF", count=2).fields["index"]
    # Ring pages had no notify, so their allocation was dropped only after the munmap.
    assert position(xen, 0, "gntalloc:munmap", length=8192) < position(
        xen, 0, "gntalloc:DEALLOC_GREF", index=ring
    )


def test_a_mapping_with_a_live_view_refuses_to_close_then_closes(xen):
    grants = XenBackend(0, devices=xen.devices(0)).grants()
    mapping = grants.share(1, 1)
    view = mapping.buf[:16]
    with pytest.raises(GrantError, match="still in use"):
        mapping.close()
    view.release()
    mapping.close()
    assert xen.ops(0).count("gntalloc:munmap") == 1
    # Closing the handle while a view pins a mapping: the files close anyway, and the
    # mapping closes later without reopening a device for a now pointless DEALLOC.
    pinned = grants.share(1, 1)
    view = pinned.buf[:1]
    with pytest.raises(GrantError):
        grants.close()
    view.release()
    pinned.close()
    assert xen.ops(0)[-3:] == ["gntalloc:mmap", "gntalloc:close", "gntalloc:munmap"]
    assert xen.ops(0).count("gntalloc:open") == 1


def test_a_read_only_mapping_cannot_carry_a_clear_byte_notify(xen):
    shared = XenBackend(0, devices=xen.devices(0)).grants().share(1, 1, writable=False)
    grants = XenBackend(1, devices=xen.devices(1)).grants()
    with pytest.raises(GrantError, match="read-only"):
        grants.map(0, shared.refs, writable=True)
    # The refused mmap gave its reservation back.
    assert xen.ops(1)[-2:] == ["gntdev:mmap", "gntdev:UNMAP_GRANT_REF"]
    mapping = grants.map(0, shared.refs, writable=False)
    with pytest.raises(GrantError, match="read-only"):
        grants.set_unmap_notify(mapping, 0, 1)
    with pytest.raises(ConfigError):
        grants.share(1, 0)
    grants.close()


def test_events_latch_while_masked_and_time_out_quietly(xen):
    a = XenBackend(0, devices=xen.devices(0)).events()
    b = XenBackend(1, devices=xen.devices(1)).events()
    pa = a.bind_unbound(1)
    pb = b.bind_interdomain(0, pa)
    assert b.pending(0) == pb  # freshly bound: pending, as on Xen
    b.unmask(pb)
    assert b.pending(0.05) is None
    a.notify(pa)
    assert b.pending(1) == pb
    a.notify(pa)
    assert b.pending(0.05) is None  # masked...
    b.unmask(pb)
    assert b.pending(1) == pb  # ...but kept
    first(xen, 0, "evtchn:NOTIFY", port=pa)
    with pytest.raises(BackendError, match="NOTIFY"):
        a.notify(pa + 100)
    a.close()
    b.close()
