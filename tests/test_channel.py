"""The libxenvchan API over the in-process backend: set-up bytes, the §4.7 return-code
table in both modes, close semantics, and a hostile peer scribbling on the shared page."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.cores import CORES, channels_on
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vchansim import layout
from vchansim.backends.base import Perm, UnmapNotify
from vchansim.backends.memory import MemoryBackend, MemoryHypervisor
from vchansim.channel import Vchan
from vchansim.core import load
from vchansim.errors import (
    ChannelClosed,
    ConfigError,
    GrantError,
    MessageTooLarge,
    ProtocolError,
    StaleServerError,
    StoreError,
    VchanError,
)
from vchansim.leaks import memory_leaks

PATH = "data/vchan/0/5"
CLIENT_PATH = "/local/domain/1/data/vchan/0/5"


def make_pair(read_min: int = 0, write_min: int = 0, *, blocking: bool = True):
    hv = MemoryHypervisor()
    srv = Vchan.server(
        MemoryBackend(1, hypervisor=hv), 0, PATH, read_min, write_min, blocking=blocking
    )
    cli = Vchan.client(MemoryBackend(0, hypervisor=hv), 1, CLIENT_PATH, blocking=blocking)
    return hv, srv, cli


@pytest.fixture
def pair() -> Iterator[tuple[Vchan, Vchan]]:
    _, srv, cli = make_pair()
    yield srv, cli
    cli.close()
    srv.close()


def in_thread(fn, *args) -> threading.Thread:
    thread = threading.Thread(target=fn, args=args, daemon=True)
    thread.start()
    return thread


def test_control_page_bytes_after_setup_match_libxenvchan():
    hv = MemoryHypervisor()
    srv = Vchan.server(MemoryBackend(1, hypervisor=hv), 0, PATH)
    page = srv._page
    assert bytes(page[:16]) == bytes(16)
    assert bytes(page[16:24]) == bytes([10, 0, 11, 0, 2, 1, 1, 0])  # §2.5
    assert srv.is_open() == layout.LIVE_WAITING
    cli = Vchan.client(MemoryBackend(0, hypervisor=hv), 1, CLIENT_PATH)
    assert page[layout.CLI_LIVE] == 1 and page[layout.SRV_NOTIFY] == layout.NOTIFY_WRITE
    assert srv.is_open() == 1 and cli.is_open() == 1
    cli.close()
    assert page[layout.CLI_LIVE] == 0 and srv.is_open() == 0
    srv.close()


def test_server_publishes_keys_with_libxenvchan_permissions_and_removes_them():
    hv = MemoryHypervisor()
    backend = MemoryBackend(1, hypervisor=hv)
    srv = Vchan.server(backend, 0, PATH)
    store = backend.store()
    ref = store.read(CLIENT_PATH + "/ring-ref")
    assert int(ref) == srv._res.ctrl.refs[0]
    assert int(store.read(CLIENT_PATH + "/event-channel")) == srv.port
    assert [str(p) for p in store.get_perms(CLIENT_PATH + "/ring-ref")] == ["n1", "r0"]
    srv.close()
    with pytest.raises(StoreError):
        store.read(CLIENT_PATH)
    store.close()


@pytest.mark.parametrize(
    ("read_min", "write_min"),
    [(0, 0), (2048, 1024), (4096, 4096), (65536, 8192), (1 << 20, 1 << 20)],
)
def test_data_flows_both_ways_for_every_order_class(read_min, write_min):
    _, srv, cli = make_pair(read_min, write_min)
    payload = bytes(range(256)) * 4096  # 1 MiB: wraps every ring size
    received = bytearray()

    def drain() -> None:
        while len(received) < len(payload):
            received.extend(srv.read(65536))

    reader = in_thread(drain)
    assert cli.write(payload) == len(payload)
    reader.join()
    assert received == payload
    back = in_thread(srv.write, payload[::-1])
    assert b"".join(cli.recv(1024) for _ in range(len(payload) // 1024)) == payload[::-1]
    back.join()
    cli.close()
    srv.close()


# -- §4.7, non-blocking -------------------------------------------------------------------
def test_nonblocking_read_and_recv_return_empty_when_not_enough_data():
    _, srv, cli = make_pair(blocking=False)
    assert srv.read(10) == b""
    assert srv.read_into(bytearray(10)) == 0
    assert srv.recv(10) == b""
    cli.send(b"12345")
    assert srv.recv(10) == b""  # all or nothing
    assert srv.read(10) == b"12345"
    cli.close()
    srv.close()


def test_nonblocking_send_and_write_when_full():
    _, srv, cli = make_pair(blocking=False)
    size = cli.write_ring.size
    assert cli.write(bytes(size + 100)) == size  # partial: what fits
    assert cli.write(b"x") == 0
    assert cli.send(b"x") == 0
    assert srv.read(1) == b"\0"
    assert cli.send(b"xy") == 0  # all or nothing
    assert cli.send(b"x") == 1
    cli.close()
    srv.close()


@pytest.mark.parametrize("blocking", [True, False])
def test_packets_larger_than_the_ring_are_refused_in_both_modes(blocking):
    _, srv, cli = make_pair(blocking=blocking)
    with pytest.raises(MessageTooLarge) as info:
        cli.send(bytes(cli.write_ring.size + 1))
    assert str(cli.write_ring.size) in str(info.value)
    with pytest.raises(MessageTooLarge):
        srv.recv(srv.read_ring.size + 1)
    cli.close()
    srv.close()


@pytest.mark.parametrize("blocking", [True, False])
def test_writers_fail_once_the_peer_closed(blocking):
    _, srv, cli = make_pair(blocking=blocking)
    srv.close()
    assert cli.is_open() == 0
    for op in (cli.write, cli.send):
        with pytest.raises(ChannelClosed) as info:
            op(b"data")
        assert info.value.written == 0
    cli.close()


@pytest.mark.parametrize("blocking", [True, False])
def test_readers_drain_data_written_before_the_close(blocking):
    _, srv, cli = make_pair(blocking=blocking)
    cli.write(b"last words")
    cli.close()
    assert srv.recv(4) == b"last"
    with pytest.raises(ChannelClosed):
        srv.recv(100)  # fewer than 100 left and the peer is gone
    assert srv.read(100) == b" words"
    with pytest.raises(ChannelClosed):
        srv.read(1)
    srv.close()


# -- §4.7, blocking -------------------------------------------------------------------------
def test_blocking_recv_waits_for_the_whole_packet(pair):
    srv, cli = pair
    got: list[bytes] = []
    reader = in_thread(lambda: got.append(srv.recv(1000)))
    for i in range(10):
        cli.write(bytes([i]) * 100)
    reader.join()
    assert got == [b"".join(bytes([i]) * 100 for i in range(10))]


def test_blocking_write_larger_than_the_ring_completes_as_the_reader_drains(pair):
    srv, cli = pair
    payload = bytes(range(251)) * 400
    got = bytearray()
    reader = in_thread(lambda: got.extend(b"".join(iter(srv))))
    assert cli.write(payload) == len(payload)
    cli.close()
    reader.join()
    assert got == payload


def test_blocking_write_interrupted_by_close_reports_progress(pair):
    srv, cli = pair
    size = cli.write_ring.size
    result: list[BaseException] = []

    def writer() -> None:
        try:
            cli.write(bytes(size * 3))
        except ChannelClosed as exc:
            result.append(exc)

    thread = in_thread(writer)
    assert srv.recv(size) == bytes(size)  # the writer is now blocked on a full ring again
    while srv.data_ready() < size:
        srv.wait(0.5)
    srv.close()
    thread.join()
    assert len(result) == 1
    assert result[0].written == 2 * size


def test_blocking_read_wakes_on_peer_close(pair):
    srv, cli = pair
    outcome: list[object] = []

    def reader() -> None:
        try:
            outcome.append(srv.read(10))
        except ChannelClosed as exc:
            outcome.append(exc)

    thread = in_thread(reader)
    cli.close()
    thread.join()
    assert isinstance(outcome[0], ChannelClosed)


def test_timeout_bounds_a_blocking_call(pair):
    srv, _ = pair
    srv.timeout = 0.05
    with pytest.raises(TimeoutError):
        srv.recv(10)


def test_zero_length_calls_do_not_block(pair):
    srv, cli = pair
    assert srv.read(0) == b""
    assert srv.recv(0) == b""
    assert cli.send(b"") == 0
    assert cli.write(b"") == 0


def test_use_after_close_is_a_clear_error(pair):
    srv, _ = pair
    srv.close()
    srv.close()  # idempotent
    with pytest.raises(ValueError, match="closed vchan"):
        srv.read(1)


def test_data_ready_and_buffer_space_arm_notifications(pair):
    srv, cli = pair
    srv._page[layout.CLI_NOTIFY] = 0
    assert srv.data_ready() == 0
    assert srv._page[layout.CLI_NOTIFY] & layout.NOTIFY_WRITE
    assert cli.buffer_space() == cli.write_ring.size
    assert srv._page[layout.SRV_NOTIFY] & layout.NOTIFY_READ


def test_select_on_fileno_wakes_when_data_arrives(pair):
    import select

    srv, cli = pair
    srv.data_ready()  # arms the WRITE notification
    while srv.wait(0):  # consume the connect kick
        pass
    cli.write(b"ping")
    readable, _, _ = select.select([srv.fileno()], [], [], 5)
    assert readable == [srv.fileno()]
    assert srv.wait(0) is True
    assert srv.read(4) == b"ping"


def test_persistent_server_accepts_a_second_client():
    hv = MemoryHypervisor()
    srv = Vchan.server(MemoryBackend(1, hypervisor=hv), 0, PATH)
    srv.server_persist = True
    first = Vchan.client(MemoryBackend(0, hypervisor=hv), 1, CLIENT_PATH)
    first.write(b"one")
    first.close()
    assert srv.is_open() == 1
    second = Vchan.client(MemoryBackend(0, hypervisor=hv), 1, CLIENT_PATH)
    second.write(b"two")
    assert srv.read(6) == b"onetwo"
    second.close()
    srv.close()


# -- bad input ----------------------------------------------------------------------------------
def test_bad_arguments_name_the_value():
    backend = MemoryBackend(1, hypervisor=MemoryHypervisor())
    with pytest.raises(ConfigError, match="1048577"):
        Vchan.server(backend, 0, PATH, read_min=(1 << 20) + 1)
    with pytest.raises(ConfigError, match="70000"):
        Vchan.server(backend, 70000, PATH)
    with pytest.raises(ConfigError, match="61"):
        Vchan.server(backend, 0, "p" * 70)


def test_client_without_server_fails_naming_the_path():
    backend = MemoryBackend(0, hypervisor=MemoryHypervisor())
    with pytest.raises(StoreError, match="no vchan server"):
        Vchan.client(backend, 1, CLIENT_PATH)


@pytest.mark.parametrize(("left", "right"), [(9, 11), (11, 11), (21, 10), (0xFFFF, 12)])
def test_client_refuses_a_page_with_bad_orders(left, right):
    hv = MemoryHypervisor()
    srv = Vchan.server(MemoryBackend(1, hypervisor=hv), 0, PATH)
    orders = srv._page[16:20].cast("H")
    orders[0], orders[1] = left, right
    orders.release()
    with pytest.raises(ProtocolError, match="order"):
        Vchan.client(MemoryBackend(0, hypervisor=hv), 1, CLIENT_PATH)
    srv.close()


# -- drain: a close that loses nothing ----------------------------------------------------
def test_drain_returns_at_once_when_the_peer_consumed_everything(pair):
    srv, cli = pair
    assert srv.drain(0) == 0  # nothing written yet
    srv.write(b"x" * 1000)
    assert srv.drain(0) == 1000
    assert cli.read(600) == b"x" * 600
    assert srv.drain(0) == 400
    cli.read(400)
    assert srv.drain() == 0


def test_drain_waits_for_the_reader_and_wakes_when_it_has_read_everything(pair):
    srv, cli = pair
    payload = bytes(range(250)) * 8  # fits the server's 2 KiB write ring
    srv.write(payload)
    got = bytearray()

    def reader() -> None:
        while len(got) < len(payload):
            got.extend(cli.read(len(payload)))

    thread = in_thread(reader)
    assert srv.drain() == 0  # no timeout: only the reader's progress can end this wait
    thread.join(10)
    assert bytes(got) == payload


def test_drain_reports_what_a_closed_peer_left_unread(pair):
    srv, cli = pair
    cli.write(b"y" * 300)
    srv.read(100)
    srv.close()
    assert cli.drain() == 200  # returns at the close, with what will never be read


def test_drain_gives_up_after_its_timeout_with_the_count(pair):
    _, cli = pair
    cli.write(b"z" * 50)
    assert cli.drain(0.05) == 50
    assert cli.is_open() == 1  # still connected: the count is what is still unread


def test_a_server_drains_into_a_client_that_comes_later():
    hv = MemoryHypervisor()
    srv = Vchan.server(MemoryBackend(1, hypervisor=hv), 0, PATH)
    srv.write(b"early")
    assert srv.drain(0.05) == 5 and srv.is_open() == layout.LIVE_WAITING
    cli = Vchan.client(MemoryBackend(0, hypervisor=hv), 1, CLIENT_PATH)
    thread = in_thread(cli.read, 5)
    assert srv.drain() == 0
    thread.join(10)
    cli.close()
    srv.close()


def test_the_drain_sample_in_docs_api_md_runs():
    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    section = text.split("## Closing without loss", 1)[1]
    sample = re.search(r"```python\n(.*?)```", section, re.S)
    assert sample is not None
    exec(compile(sample.group(1), "docs/api.md", "exec"), {})


@pytest.mark.parametrize("wait", [float("nan"), -1.0])
def test_a_client_wait_that_is_not_a_number_of_seconds_is_refused(wait):
    with pytest.raises(ConfigError, match="is not a number of seconds"):
        Vchan.client(MemoryBackend(0, hypervisor=MemoryHypervisor()), 1, CLIENT_PATH, wait=wait)


def test_drain_after_close_is_a_value_error(pair):
    srv, _ = pair
    srv.close()
    with pytest.raises(ValueError, match="closed vchan"):
        srv.drain()


# -- a hostile peer ---------------------------------------------------------------------------
DOCUMENTED = (ChannelClosed, MessageTooLarge, VchanError)
FIELDS = st.sampled_from(
    [
        ("I", 0),
        ("I", 4),
        ("I", 8),
        ("I", 12),  # the four indices
        ("H", 16),
        ("H", 18),  # orders (must be ignored after set-up)
        ("B", 20),
        ("B", 21),
        ("B", 22),
        ("B", 23),  # live and notify bytes
    ]
)
OPS = st.sampled_from(
    ["read", "recv", "write", "send", "data_ready", "buffer_space", "is_open", "drain"]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.sampled_from([(0, 0), (4096, 2048), (65536, 65536)]),
    server_side=st.booleans(),
    pokes=st.lists(
        st.tuples(FIELDS, st.integers(0, 0xFFFFFFFF), OPS, st.integers(0, 70000)), max_size=25
    ),
)
@pytest.mark.parametrize("core", CORES)
def test_hostile_peer_never_breaks_the_local_side(core, sizes, server_side, pokes):
    with channels_on(core):
        _, srv, cli = make_pair(*sizes, blocking=False)
    local = srv if server_side else cli
    assert isinstance(local.read_ring, load(core).RingCore)
    local.timeout = 0.0  # any attempt to block would raise TimeoutError and fail the test
    page = local._page
    try:
        for (fmt, offset), value, op, n in pokes:
            field = page[offset : offset + {"I": 4, "H": 2, "B": 1}[fmt]].cast(fmt)
            field[0] = value & {"I": 0xFFFFFFFF, "H": 0xFFFF, "B": 0xFF}[fmt]
            field.release()
            try:
                result = _do(local, op, n)
            except DOCUMENTED:
                continue
            if op in ("read", "recv"):
                assert len(result) <= n
            elif op in ("write", "send"):
                assert 0 <= result <= n
            elif op in ("data_ready", "buffer_space", "drain"):
                ring = local.read_ring if op == "data_ready" else local.write_ring
                assert 0 <= result <= ring.size
    finally:
        cli.close()
        srv.close()


def _do(chan: Vchan, op: str, n: int):
    if op in ("read", "recv"):
        return getattr(chan, op)(n)
    if op in ("write", "send"):
        return getattr(chan, op)(bytes(n))
    return getattr(chan, op)()


class _HostileIndices:
    """The four u32 indices as the honest end's Python core loads them, with a hostile
    peer that moves some of them just before chosen loads.  (The C core makes the same
    loads in the same order, but nothing can run between them there.)"""

    def __init__(self, real: memoryview) -> None:
        self._real = real
        self.loads = 0
        #: load number -> (slot, delta): before that load, add delta to that slot.
        self.schedule: dict[int, tuple[int, int]] = {}

    def __getitem__(self, slot: int) -> int:
        moved = self.schedule.get(self.loads)
        self.loads += 1
        if moved is not None:
            target, delta = moved
            self._real[target] = (self._real[target] + delta) & 0xFFFFFFFF
        return self._real[slot]

    def __setitem__(self, slot: int, value: int) -> None:
        self._real[slot] = value

    def release(self) -> None:
        self._real.release()


#: Moves of the indices during one call: before load k, add delta to a slot.  Small
#: deltas, which make the indices just slightly inconsistent, are the sharp ones.
MOVES = st.dictionaries(
    st.integers(0, 15),
    st.tuples(st.integers(0, 3), st.integers(-5000, 5000) | st.integers(0, 0xFFFFFFFF)),
    max_size=6,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.sampled_from([(0, 0), (4096, 2048)]),
    server_side=st.booleans(),
    blocking=st.booleans(),
    ops=st.lists(st.tuples(OPS, st.integers(0, 5000), MOVES), min_size=1, max_size=10),
)
def test_indices_moved_between_any_two_loads_raise_nothing_undocumented(
    sizes, server_side, blocking, ops
):
    """Every call gives a result in range or a documented exception, however the peer
    moves the indices while the call runs -- between a space check and the copy, say."""
    if "python" not in CORES:
        pytest.skip("the Python core is not available here")
    with channels_on("python"):
        _, srv, cli = make_pair(*sizes, blocking=blocking)
    local = srv if server_side else cli
    local.timeout = 0.0  # a blocking call that has to wait raises TimeoutError at once
    hostile = []
    for ring in (local.read_ring, local.write_ring):
        ring._idx = _HostileIndices(ring._idx)
        hostile.append(ring._idx)
    try:
        for op, n, moves in ops:
            for indices in hostile:
                indices.loads, indices.schedule = 0, moves
            try:
                result = _do(local, op, n)
            except (*DOCUMENTED, TimeoutError):
                continue
            if op in ("read", "recv"):
                assert len(result) <= n
            elif op in ("write", "send"):
                assert 0 <= result <= n
            elif op in ("data_ready", "buffer_space", "drain"):
                ring = local.read_ring if op == "data_ready" else local.write_ring
                assert 0 <= result <= ring.size
    finally:
        cli.close()
        srv.close()


@pytest.mark.parametrize("sizes", [(0, 0), (65536, 65536)])
def test_a_refused_publish_reports_the_store_error_and_releases_everything(sizes):
    hv = MemoryHypervisor()
    with pytest.raises(StoreError) as info:
        Vchan.server(MemoryBackend(1, hypervisor=hv), 0, "/local/domain/0/data/x", *sizes)
    assert info.value.errno == 13  # EACCES: domain 1 may not write under dom0's home
    assert not hv.grants.domains() and not hv.ports.domains()


def test_a_refused_unmap_notify_leaves_no_grant_behind():
    hv = MemoryHypervisor()
    grants = MemoryBackend(1, hypervisor=hv).grants()
    with pytest.raises(GrantError, match="port 99 is not bound"):
        grants.share(0, 1, notify=UnmapNotify(0, 99))
    assert not hv.grants.domains()
    grants.close()


class _WaitingClientBackend(MemoryBackend):
    """The in-process backend, telling the test when its client starts waiting on a watch."""

    def __init__(self, domid: int, hypervisor: MemoryHypervisor) -> None:
        super().__init__(domid, hypervisor=hypervisor)
        self.waiting = threading.Event()

    def store(self):
        store = super().store()
        read_watch = store.read_watch

        def announced(timeout=None):
            self.waiting.set()
            return read_watch(timeout)

        store.read_watch = announced
        return store


def test_client_wait_connects_to_a_server_that_comes_later():
    hv = MemoryHypervisor()
    backend = _WaitingClientBackend(0, hv)
    got: list[Vchan] = []
    client = in_thread(lambda: got.append(Vchan.client(backend, 1, CLIENT_PATH, wait=60)))
    assert backend.waiting.wait(60), "the client never waited"
    assert not got  # it found no server, and waits for one
    srv = Vchan.server(MemoryBackend(1, hypervisor=hv), 0, PATH)
    client.join(60)
    (cli,) = got
    srv.write(b"late")
    assert cli.read(4) == b"late"
    cli.close()
    srv.close()


def _leave_stale_keys(hv: MemoryHypervisor) -> None:
    """What a server that died leaves in XenStore: its keys, naming a grant ref and a
    port that no longer exist."""
    store = MemoryBackend(1, hypervisor=hv).store()
    for key, value in ((layout.RING_REF_KEY, b"77"), (layout.EVENT_CHANNEL_KEY, b"9")):
        node = layout.key_path(CLIENT_PATH, key)
        store.write(node, value)
        store.set_perms(node, [Perm("n", 1), Perm("r", 0)])
    store.close()


def test_a_dead_servers_keys_are_named_stale_and_the_leak_report_says_so():
    hv = MemoryHypervisor()
    _leave_stale_keys(hv)
    with pytest.raises(StaleServerError) as info:
        Vchan.client(MemoryBackend(0, hypervisor=hv), 1, CLIENT_PATH)
    assert str(info.value) == (
        f"no live vchan server for domain 1 at {CLIENT_PATH!r}: binding its event-channel "
        "port 9 failed (domain 1 has no port 9); its keys are stale (a server that died "
        "leaves them behind) or another client took it"
    )
    with pytest.raises(StaleServerError):  # and so it stays, however long one waits
        Vchan.client(MemoryBackend(0, hypervisor=hv), 1, CLIENT_PATH, wait=0.05)
    assert sorted(str(leak) for leak in memory_leaks(hv)) == [
        f"xenstore node {CLIENT_PATH}/event-channel = '9' left behind (a stale vchan server "
        "key: domain 1 has no port 9; its server is gone)",
        f"xenstore node {CLIENT_PATH}/ring-ref = '77' left behind (a stale vchan server "
        "key: domain 1 has no grant ref 77; its server is gone)",
    ]


def test_client_wait_takes_stale_keys_for_a_server_not_there_yet():
    hv = MemoryHypervisor()
    _leave_stale_keys(hv)
    backend = _WaitingClientBackend(0, hv)
    got: list[Vchan] = []
    client = in_thread(lambda: got.append(Vchan.client(backend, 1, CLIENT_PATH, wait=60)))
    assert backend.waiting.wait(60), "the stale keys ended the wait"
    srv = Vchan.server(MemoryBackend(1, hypervisor=hv), 0, PATH)  # a new server replaces them
    client.join(60)
    (cli,) = got
    srv.write(b"new")
    assert cli.read(3) == b"new"
    cli.close()
    srv.close()
    assert memory_leaks(hv) == []


def test_client_wait_ends_with_the_store_error_when_no_server_comes():
    backend = MemoryBackend(0, hypervisor=MemoryHypervisor())
    with pytest.raises(StoreError, match="no vchan server"):
        Vchan.client(backend, 1, CLIENT_PATH, wait=0.05)
