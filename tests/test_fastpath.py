"""Both cores of the hot path at their edges: released memory, read-only mappings, bad
counts, descriptors that fail, and waits interrupted by signals.  (The ring's index
arithmetic and copies are covered by tests/test_ring.py's model.)"""

from __future__ import annotations

import errno
import mmap
import os
import select
import signal
from types import ModuleType

import pytest
from helpers.cores import CORES, faces

from vchansim import core as cores
from vchansim import layout
from vchansim.atomics import AtomicCounters
from vchansim.errors import VchanError
from vchansim.ring import NotifierFace, RingFace


@pytest.fixture(params=CORES)
def core(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def ops(core: str) -> ModuleType:
    return cores.load(core)


@pytest.fixture
def Ring(core: str) -> type[RingFace]:
    return faces(core)[0]


@pytest.fixture
def Notifier(core: str) -> type[NotifierFace]:
    return faces(core)[1]


@pytest.fixture
def page() -> memoryview:
    return memoryview(mmap.mmap(-1, layout.PAGE_SIZE))


def _ring(Ring: type[RingFace], page: memoryview, *, readonly: bool = False) -> RingFace:
    data = memoryview(mmap.mmap(-1, 1024))
    return Ring.left(page, data.toreadonly() if readonly else data, 10)


def test_a_released_ring_refuses_every_operation_and_frees_the_mapping(Ring, page):
    region = mmap.mmap(-1, 1024)
    ring = Ring.left(page, memoryview(region), 10)
    ring.release()
    for call in (ring.data_ready, ring.buffer_space, ring.fill, lambda: ring.cons):
        with pytest.raises(ValueError, match="released"):
            call()
    with pytest.raises(ValueError, match="released"):
        ring.put(b"x")
    with pytest.raises(ValueError, match="released"):
        ring.get(bytearray(1))
    region.close()  # no export is left behind


def test_a_read_only_ring_can_be_read_but_not_written(Ring, page):
    ring = _ring(Ring, page, readonly=True)
    with pytest.raises(TypeError, match="read-only"):
        ring.put(b"x")
    assert ring.get(bytearray(4)) == 0


def test_counts_are_checked_against_the_buffer(Ring, page):
    ring = _ring(Ring, page)
    with pytest.raises(ValueError, match="nbytes=5 does not fit a 4-byte buffer"):
        ring.put(b"abcd", 5)
    with pytest.raises(ValueError, match="nbytes=-1"):
        ring.get(bytearray(4), -1)
    with pytest.raises(TypeError, match="writable"):
        ring.get(b"immutable")
    assert ring.put(b"abcd", 2) == 2
    out = bytearray(4)
    assert ring.get(out, None, None) == 0  # all 4 asked for, 2 there: nothing moves
    assert ring.get(out) == 2 and out[:2] == b"ab"


def test_a_packet_larger_than_the_ring_is_never_ready(Ring, page):
    ring = _ring(Ring, page)
    assert ring.put(bytes(1024)) == 1024
    assert ring.put(b"x") == -1  # full: nothing done
    assert ring.get(bytearray(2048), None, None) == 0
    assert ring.data_ready() == 1024


def test_a_ring_needs_a_buffer_of_its_size(Ring, page):
    with pytest.raises(ValueError, match="needs 4096 bytes"):
        Ring.left(page, memoryview(bytearray(1024)), 12)


def test_a_released_notifier_refuses_to_touch_the_page(Notifier, page):
    notifier = Notifier(page, server=True)
    notifier.release()
    with pytest.raises(ValueError, match="released"):
        notifier.request(layout.NOTIFY_WRITE)
    with pytest.raises(ValueError, match="released"):
        notifier.take(layout.NOTIFY_READ)


def test_counters_add_locked_and_read_only_ones_refuse(ops, page):
    counters = AtomicCounters(page, 2)
    counters.add(1, 5)
    counters.add(1)
    assert (counters[0], counters[1]) == (0, 6)
    assert ops.fetch_add_u64(counters.address(0), 3) == 0
    assert counters[0] == 3
    with pytest.raises(IndexError):
        counters.address(2)
    counters.release()
    with pytest.raises(VchanError, match="read-only"):
        counters.add(0)
    with pytest.raises(ValueError, match="released"):
        ops.fetch_add_u64(0, 1)
    viewer = AtomicCounters(page.toreadonly(), 2)
    assert viewer[0] == 3
    with pytest.raises(VchanError, match="read-only"):
        viewer.add(0)
    viewer.release()


def test_a_buffer_address_is_its_first_byte_and_read_only_buffers_have_none(ops, page):
    address = ops.buffer_address(page)
    assert ops.fetch_add_u64(address + 8, 7) == 0
    assert page[8] == 7
    with pytest.raises(BufferError):
        ops.buffer_address(page.toreadonly())


def test_map_fixed_places_shared_pages_over_a_reserved_range_and_reports_failures(ops):
    fd = os.memfd_create("vchansim-test")
    try:
        os.ftruncate(fd, 2 * layout.PAGE_SIZE)
        os.pwrite(fd, b"second", layout.PAGE_SIZE)
        region = mmap.mmap(-1, 2 * layout.PAGE_SIZE, flags=mmap.MAP_PRIVATE)
        base = ops.buffer_address(region)
        rw = mmap.PROT_READ | mmap.PROT_WRITE
        ops.map_fixed(base, layout.PAGE_SIZE, rw, fd, layout.PAGE_SIZE)
        assert region[:6] == b"second"
        region[0:1] = b"S"  # shared: the write reaches the object
        assert os.pread(fd, 1, layout.PAGE_SIZE) == b"S"
        with pytest.raises(OSError) as raised:  # not page-aligned
            ops.map_fixed(base, layout.PAGE_SIZE, rw, fd, 1)
        assert raised.value.errno == errno.EINVAL
        region.close()
    finally:
        os.close(fd)
    with pytest.raises(OSError) as raised:
        ops.map_fixed(base, layout.PAGE_SIZE, mmap.PROT_READ, fd, 0)
    assert raised.value.errno == errno.EBADF


@pytest.fixture
def eventfd_in_epoll():
    fd = os.eventfd(0, os.EFD_NONBLOCK)
    epoll = select.epoll()
    epoll.register(fd, select.EPOLLIN | select.EPOLLET)
    yield fd, epoll
    epoll.close()
    os.close(fd)


def test_a_kick_counts_and_wakes_the_waiter(ops, eventfd_in_epoll, page):
    fd, epoll = eventfd_in_epoll
    counters = AtomicCounters(page, 1)
    assert ops.wait_one(epoll.fileno(), 0) == -1
    ops.eventfd_kick(fd, counters.address(0))
    ops.eventfd_kick(fd, 0)  # no counter
    assert ops.wait_one(epoll.fileno(), None) == fd
    assert counters[0] == 1
    assert os.eventfd_read(fd) == 2
    counters.release()


def test_kick_and_wait_report_bad_descriptors(ops, page):
    reader, writer = os.pipe()
    os.close(reader)
    os.close(writer)
    with pytest.raises(OSError) as raised:
        ops.eventfd_kick(writer, 0)
    assert raised.value.errno == errno.EBADF
    with pytest.raises(OSError) as raised:
        ops.wait_one(reader, 0)
    assert raised.value.errno == errno.EBADF
    with pytest.raises(ValueError, match="not a file descriptor"):
        ops.wait_one(-1, 0)


class _Interrupted(Exception):
    pass


def test_a_wait_interrupted_by_a_raising_handler_raises(ops, eventfd_in_epoll):
    _fd, epoll = eventfd_in_epoll

    def handler(signum: int, frame: object) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        with pytest.raises(_Interrupted):
            ops.wait_one(epoll.fileno(), 30)  # returns only through the handler
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_wait_resumes_after_a_quiet_handler_and_still_sees_the_event(
    ops, eventfd_in_epoll
):
    fd, epoll = eventfd_in_epoll
    seen: list[int] = []

    def handler(signum: int, frame: object) -> None:
        seen.append(signum)
        os.eventfd_write(fd, 1)  # the event the resumed wait must deliver

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        assert ops.wait_one(epoll.fileno(), 30) == fd
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert seen == [signal.SIGALRM]


def test_a_core_built_from_older_sources_is_not_loaded(monkeypatch):
    # a module with none of the interface stands in for a stale build of the accelerator
    monkeypatch.setitem(cores.MODULES, "c", "vchansim.layout")
    with pytest.raises(
        ImportError, match=r"lacks ChannelCore, NotifyCore, RingCore, Waiter.*rebuild it"
    ):
        cores.load("c")
    assert "c" not in cores.available()


def test_a_stale_core_is_said_in_one_line_and_the_python_one_used(monkeypatch, capsys):
    monkeypatch.delenv(cores.PURE_ENV, raising=False)
    monkeypatch.setitem(cores.MODULES, "c", "vchansim.layout")  # stands in for a stale build
    name, module = cores._select()
    assert (name, module.__name__) == ("python", "vchansim.pycore")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("vchansim: using the Python ring core: ")
    assert "rebuild it" in err[0]


def test_a_core_never_built_falls_back_without_a_word(monkeypatch, capsys):
    monkeypatch.delenv(cores.PURE_ENV, raising=False)
    monkeypatch.setitem(cores.MODULES, "c", "vchansim._no_such_core")
    name, _ = cores._select()
    assert name == "python"
    assert capsys.readouterr().err == ""
