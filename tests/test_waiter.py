"""The core's blocking reads and writes (``Waiter``), on both cores: the notify-bit
protocol they follow (arm only when short, kick only when asked), sleeping again after a
wake-up that brought too little, the wait word, the peer's close, and no lost wake-up
between two of them -- of either core -- under random interleavings."""

from __future__ import annotations

import mmap
import os
import select
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

import pytest
from helpers.cores import CORES, faces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vchansim import core as cores
from vchansim import layout, statspage
from vchansim.atomics import AtomicCounters
from vchansim.ring import NotifierFace, RingFace

RING_ORDER = 10
RING = 1 << RING_ORDER
#: Generous: a wait that should end at once, bounded so that a bug fails instead of hanging.
PATIENCE = 30.0


@dataclass
class End:
    """One endpoint over a shared page: its rings, notifier, waiter and counters."""

    read_ring: RingFace
    write_ring: RingFace
    notify: NotifierFace
    waiter: object
    incoming: int
    counters: AtomicCounters
    live: int

    @property
    def sent(self) -> int:
        return self.counters[0]

    @property
    def wait_word(self) -> int:
        return self.counters[1]


class Pair:
    """A server and a client end on one control page, each over a core of its own, with
    an eventfd each way (as the shm backend gives them)."""

    def __init__(self, server_core: str, client_core: str) -> None:
        self.page = memoryview(mmap.mmap(-1, layout.PAGE_SIZE))
        self.page[layout.CLI_LIVE] = self.page[layout.SRV_LIVE] = layout.LIVE_CONNECTED
        self.left = memoryview(mmap.mmap(-1, RING))
        self.right = memoryview(mmap.mmap(-1, RING))
        self._fds: list[int] = []
        self._epolls: list[select.epoll] = []
        to_server, to_client = self._eventfd(), self._eventfd()
        self.server = self._end(server_core, server=True, incoming=to_server, kick=to_client)
        self.client = self._end(client_core, server=False, incoming=to_client, kick=to_server)

    def _eventfd(self) -> int:
        fd = os.eventfd(0, os.EFD_NONBLOCK)
        self._fds.append(fd)
        return fd

    def _end(self, core: str, *, server: bool, incoming: int, kick: int) -> End:
        Ring, Notifier = faces(core)
        indices = self.page[:16].cast("I")
        left = Ring.left(indices, self.left, RING_ORDER)
        right = Ring.right(indices, self.right, RING_ORDER)
        notify = Notifier(self.page, server=server)
        epoll = select.epoll()
        epoll.register(incoming, select.EPOLLIN | select.EPOLLET)
        self._epolls.append(epoll)
        counters = AtomicCounters(memoryview(mmap.mmap(-1, 16)), 2)
        waiter = cores.load(core).Waiter(
            notify, epoll.fileno(), kick, counters.address(1), counters.address(0)
        )
        read_ring, write_ring = (left, right) if server else (right, left)
        live = layout.CLI_LIVE if server else layout.SRV_LIVE
        return End(read_ring, write_ring, notify, waiter, incoming, counters, live)

    def close(self) -> None:
        for epoll in self._epolls:
            epoll.close()
        for fd in self._fds:
            os.close(fd)


@pytest.fixture(params=CORES)
def core(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pair(core: str) -> Iterator[Pair]:
    made = Pair(core, core)
    yield made
    made.close()


def _own_bits(pair: Pair, end: End) -> int:
    """The notify byte ``end``'s peer sets (its requests of ``end``)."""
    return pair.page[layout.SRV_NOTIFY if end is pair.server else layout.CLI_NOTIFY]


def test_a_read_of_ready_data_arms_nothing_and_kicks_only_a_peer_that_asked(pair):
    server, client = pair.server, pair.client
    assert client.write_ring.put(b"hello") == 5
    out = bytearray(16)
    assert server.waiter.read(server.read_ring, out, None, 1, server.live, PATIENCE) == 5
    assert out[:5] == b"hello"
    assert _own_bits(pair, client) == 0  # no WRITE request: the data was there
    assert server.sent == 0  # the client had not asked for a READ event
    client.notify.request(layout.NOTIFY_READ)
    client.write_ring.put(b"again")
    assert server.waiter.read(server.read_ring, out, None, 1, server.live, PATIENCE) == 5
    assert server.sent == 1 and os.eventfd_read(client.incoming) == 1
    assert _own_bits(pair, server) == 0  # the request was taken with the kick


def test_a_write_that_fits_kicks_only_a_reader_that_asked(pair):
    server, client = pair.server, pair.client
    assert client.waiter.write(client.write_ring, b"x" * 100, None, 1, client.live, 0) == 100
    assert client.sent == 0
    server.notify.request(layout.NOTIFY_WRITE)
    assert client.waiter.write(client.write_ring, b"y" * 100, None, 1, client.live, 0) == 100
    assert client.sent == 1


def test_a_read_that_times_out_has_armed_the_bit_and_slept_through_a_stale_event(pair):
    server, client = pair.server, pair.client
    os.eventfd_write(server.incoming, 1)  # an event from before the call: nothing behind it
    out = bytearray(16)
    assert server.waiter.read(server.read_ring, out, None, 1, server.live, 0.05) == 0
    assert _own_bits(pair, client) & layout.NOTIFY_WRITE  # "kick me when you write"
    assert server.wait_word == 0


def test_a_packet_read_waits_for_all_of_it(pair):
    server, client = pair.server, pair.client
    client.write_ring.put(b"abc")
    out = bytearray(8)
    assert server.waiter.read(server.read_ring, out, None, 8, server.live, 0) == 0
    assert server.read_ring.data_ready() == 3  # nothing taken
    client.write_ring.put(b"defgh")
    assert server.waiter.read(server.read_ring, out, None, 8, server.live, 0) == 8
    assert out == b"abcdefgh"


def test_a_closed_peer_ends_the_wait(pair):
    server = pair.server
    pair.page[server.live] = layout.LIVE_CLOSED
    started = time.monotonic()
    assert server.waiter.read(server.read_ring, bytearray(4), None, 1, server.live, None) == 0
    written = server.waiter.write(server.write_ring, bytes(RING + 10), None, 1, server.live, None)
    assert written == RING  # what fitted went in, and the call says so
    assert time.monotonic() - started < PATIENCE  # liveness bound, not a speed figure
    # -1: a persistent server does not watch the byte, so only the timeout ends the wait
    assert server.waiter.read(server.read_ring, bytearray(4), None, 1, -1, 0.02) == 0


def test_a_sleeping_reader_says_so_in_its_wait_word_and_wakes_for_data(pair):
    server, client = pair.server, pair.client
    out = bytearray(64)
    result: list[int] = []
    reader = threading.Thread(
        target=lambda: result.append(
            server.waiter.read(server.read_ring, out, None, 1, server.live, PATIENCE)
        )
    )
    reader.start()
    deadline = time.monotonic() + PATIENCE
    while not server.wait_word and time.monotonic() < deadline:
        pass  # the reader is about to sleep: it has to say so first
    wait = statspage.decode(server.wait_word)
    assert wait is not None and wait.blocked is statspage.Blocked.READ
    assert client.waiter.write(client.write_ring, b"wake", None, 1, client.live, PATIENCE) == 4
    reader.join(PATIENCE)
    assert result == [4] and out[:4] == b"wake"
    assert server.wait_word == 0 and client.sent == 1


def test_packet_writes_are_all_or_nothing(pair):
    client = pair.client
    client.write_ring.put(bytes(RING - 10))
    assert client.waiter.write(client.write_ring, bytes(20), None, 20, client.live, 0) == 0
    assert client.write_ring.buffer_space() == 10


def test_bad_calls_are_refused(pair, core):
    server = pair.server
    ops: ModuleType = cores.load(core)
    with pytest.raises(ValueError, match="need=0"):
        server.waiter.read(server.read_ring, bytearray(4), None, 0, server.live, 0)
    with pytest.raises(ValueError, match="need=5"):
        server.waiter.read(server.read_ring, bytearray(4), None, 5, server.live, 0)
    with pytest.raises(ValueError, match="live offset"):
        server.waiter.read(server.read_ring, bytearray(4), None, 1, layout.PAGE_SIZE, 0)
    with pytest.raises(TypeError, match="writable"):
        server.waiter.read(server.read_ring, b"immutable", None, 1, server.live, 0)
    with pytest.raises(TypeError):
        ops.Waiter(object(), 0, 0, 0, 0)
    bare = ops.Waiter.__new__(ops.Waiter)
    with pytest.raises(ValueError, match="never initialised"):
        bare.read(server.read_ring, bytearray(4), None, 1, server.live, 0)
    server.read_ring.release()
    with pytest.raises(ValueError, match="released"):
        server.waiter.read(server.read_ring, bytearray(4), None, 1, server.live, 0)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cores_used=st.sampled_from([(a, b) for a in CORES for b in CORES]),
    writes=st.lists(st.integers(1, 3 * RING), min_size=1, max_size=12),
    reads=st.lists(st.integers(1, 2 * RING), min_size=1, max_size=6),
)
def test_no_wake_up_is_lost_between_a_writer_and_a_reader(cores_used, writes, reads):
    """A writer and a reader in two threads, each sleeping in its core whenever the ring
    is full or empty: every byte arrives in order and neither waits out its timeout
    (a lost wake-up would leave one asleep until then)."""
    pair = Pair(*cores_used)
    server, client = pair.server, pair.client
    payload = bytes(i % 251 for i in range(sum(writes)))
    failures: list[str] = []

    def write() -> None:
        pos = 0
        for size in writes:
            chunk = payload[pos : pos + size]
            done = client.waiter.write(client.write_ring, chunk, None, 1, client.live, PATIENCE)
            if done != size:
                failures.append(f"write of {size} at {pos} timed out")
                return
            pos += size

    writer = threading.Thread(target=write)
    writer.start()
    got = bytearray()
    turn = 0
    while len(got) < len(payload) and not failures:
        out = bytearray(reads[turn % len(reads)])
        turn += 1
        n = server.waiter.read(server.read_ring, out, None, 1, server.live, PATIENCE)
        if not n:
            failures.append(f"read timed out after {len(got)} of {len(payload)} bytes")
        got += out[:n]
    writer.join(PATIENCE)
    pair.close()
    assert not failures
    assert bytes(got) == payload
