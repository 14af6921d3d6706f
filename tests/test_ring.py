"""The ring against a reference model: random interleavings of writes and reads of random
sizes, every order class, free-running indices that start near 2**32 and wrap."""

from __future__ import annotations

import mmap
from collections import deque

import pytest
from helpers.cores import CORES, faces
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from vchansim import layout
from vchansim.pycore import U32


def _page_and_ring(order: int, start: int) -> tuple[mmap.mmap, memoryview, memoryview]:
    page = mmap.mmap(-1, layout.PAGE_SIZE)
    data = mmap.mmap(-1, max(layout.ring_size(order), layout.PAGE_SIZE))
    indices = memoryview(page)[:16].cast("I")
    indices[0] = indices[1] = start  # left.cons = left.prod = start
    return page, indices, memoryview(data)


class RingModel(RuleBasedStateMachine):
    """Producer and consumer are two Ring objects over the same memory, as two peers are."""

    core = "python"

    @initialize(
        order=st.integers(layout.MIN_ORDER, layout.MAX_ORDER),
        start=st.one_of(st.integers(U32 - 64, U32), st.integers(0, U32)),
    )
    def setup(self, order: int, start: int) -> None:
        self.page, self.indices, self.data = _page_and_ring(order, start)
        ring = faces(self.core)[0]
        self.producer = ring.left(self.indices, self.data, order)
        self.consumer = ring.left(self.indices, self.data, order)
        self.model: deque[int] = deque()
        self.size = layout.ring_size(order)

    @rule(data=st.data())
    def write(self, data: st.DataObject) -> None:
        space = self.producer.buffer_space()
        n = data.draw(st.integers(0, space))
        payload = (
            data.draw(st.binary(min_size=n, max_size=n))
            if n < 64
            else bytes((self.producer.prod + i) % 251 for i in range(n))
        )
        before = self.producer.prod
        self.producer.copy_in(memoryview(payload), n)
        assert self.producer.prod == (before + n) & U32
        if self.producer.prod < before:
            event("producer index wrapped past 2**32")
        self.model.extend(payload)

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        ready = self.consumer.data_ready()
        n = data.draw(st.integers(1, ready))
        out = bytearray(n)
        self.consumer.copy_out(memoryview(out), n)
        expected = bytes(self.model.popleft() for _ in range(n))
        assert bytes(out) == expected

    @rule()
    def fill_completely(self) -> None:
        space = self.producer.buffer_space()
        self.producer.copy_in(memoryview(bytes(space)), space)
        self.model.extend(bytes(space))
        assert self.consumer.buffer_space() == 0
        assert self.consumer.data_ready() == self.size  # a full ring is readable (Xen 4.5 fix)

    @invariant()
    def accounting(self) -> None:
        assert self.consumer.data_ready() == len(self.model)
        assert self.producer.buffer_space() == self.size - len(self.model)

    def teardown(self) -> None:
        self.producer.release()
        self.consumer.release()
        for view in (self.indices, self.data):
            view.release()
        self.page.close()


for _core in CORES:
    _model = type(f"RingModel_{_core}", (RingModel,), {"core": _core})
    _case = _model.TestCase
    _case.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
    globals()[f"TestRingModel_{_core}"] = _case
del _core, _model, _case


@pytest.mark.parametrize("core", CORES)
@given(prod=st.integers(0, U32), cons=st.integers(0, U32), order=st.integers(10, 20))
def test_corrupt_indices_are_sanitised_never_out_of_range(core, prod, cons, order):
    _page, indices, data = _page_and_ring(order, 0)
    indices[0], indices[1] = cons, prod
    ring = faces(core)[0].left(indices, data, order)
    size = layout.ring_size(order)
    in_flight = (prod - cons) & U32
    assert ring.data_ready() == (in_flight if in_flight <= size else 0)
    assert ring.buffer_space() == (size - in_flight if in_flight <= size else 0)
    assert 0 <= ring.data_ready() <= size
    assert 0 <= ring.buffer_space() <= size


@pytest.mark.parametrize("core", CORES)
def test_wraparound_copy_splits_at_the_ring_end(core):
    _page, indices, data = _page_and_ring(10, U32 - 99)  # 100 bytes before the u32 wraps
    ring = faces(core)[0].left(indices, data, 10)
    ring.copy_in(memoryview(b"x" * 1000), 1000)
    ring.copy_out(memoryview(bytearray(1000)), 1000)
    payload = bytes(range(256)) * 3
    ring.copy_in(memoryview(payload), len(payload))  # starts at offset 900 of 1024: wraps
    assert ring.prod == (U32 - 99 + 1000 + len(payload)) & U32
    assert bytes(ring.buf[900:1024]) == payload[:124]
    assert bytes(ring.buf[: len(payload) - 124]) == payload[124:]
    out = bytearray(len(payload))
    ring.copy_out(memoryview(out), len(payload))
    assert bytes(out) == payload


@pytest.mark.parametrize("core", CORES)
def test_notify_bits_are_one_shot_and_touch_only_their_bit(core):
    notifier = faces(core)[1]
    page = mmap.mmap(-1, layout.PAGE_SIZE)
    view = memoryview(page)
    server = notifier(view, server=True)
    client = notifier(view, server=False)
    server.request(layout.NOTIFY_WRITE)  # server: "kick me when you write"
    assert view[layout.CLI_NOTIFY] == layout.NOTIFY_WRITE
    client.request(layout.NOTIFY_READ)
    assert view[layout.SRV_NOTIFY] == layout.NOTIFY_READ
    assert client.take(layout.NOTIFY_WRITE) is True
    assert client.take(layout.NOTIFY_WRITE) is False  # one request, one kick
    view[layout.CLI_NOTIFY] = layout.NOTIFY_WRITE | layout.NOTIFY_READ
    assert client.take(layout.NOTIFY_READ) is True
    assert view[layout.CLI_NOTIFY] == layout.NOTIFY_WRITE  # the other bit survives
    assert server.take(layout.NOTIFY_READ) is True
    assert view[layout.SRV_NOTIFY] == 0
    server.release()
    client.release()
    view.release()
    page.close()
