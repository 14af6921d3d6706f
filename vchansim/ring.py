"""One direction of a vchan ring, and the notify-bit protocol, over plain memory.

Nothing here knows about backends, processes or files: a :class:`Ring` is a byte buffer
plus its consumer/producer pair in the control page, and a :class:`Notifier` is the pair
of notify bytes one endpoint uses.  Both work on any writable ``memoryview``, so the same
code runs over an anonymous mapping in a unit test, POSIX shared memory, or a page granted
by a real hypervisor (PROTOCOL.md §3-§4).
"""

from __future__ import annotations

from . import layout
from .atomics import AtomicByte, fence

U32 = 0xFFFFFFFF


class Ring:
    """A power-of-two byte ring with free-running u32 ``cons``/``prod`` indices.

    ``indices`` is the control page's first 16 bytes cast to four u32 (left.cons,
    left.prod, right.cons, right.prod); ``cons_slot``/``prod_slot`` pick this ring's pair.
    The size comes from the locally stored order, never from the page, and every shared
    index is read exactly once per computation, so a hostile peer can stall the ring but
    never make us touch memory outside it (XSA-86, XSA-155).
    """

    __slots__ = ("_cons", "_idx", "_prod", "buf", "mask", "order", "size")

    def __init__(
        self, indices: memoryview, cons_slot: int, prod_slot: int, buf: memoryview, order: int
    ) -> None:
        size = layout.ring_size(order)
        if buf.nbytes < size:
            raise ValueError(f"ring of order {order} needs {size} bytes, buffer has {buf.nbytes}")
        self._idx = indices
        self._cons = cons_slot
        self._prod = prod_slot
        self.buf = buf[:size]
        self.order = order
        self.size = size
        self.mask = size - 1

    @classmethod
    def left(cls, indices: memoryview, buf: memoryview, order: int) -> Ring:
        """The client -> server ring."""
        return cls(indices, 0, 1, buf, order)

    @classmethod
    def right(cls, indices: memoryview, buf: memoryview, order: int) -> Ring:
        """The server -> client ring."""
        return cls(indices, 2, 3, buf, order)

    # -- indices -------------------------------------------------------------------
    @property
    def cons(self) -> int:
        return self._idx[self._cons]

    @property
    def prod(self) -> int:
        return self._idx[self._prod]

    def fill(self) -> int:
        """Bytes in flight as the page says, unsanitised (may exceed ``size`` if corrupt)."""
        prod = self._idx[self._prod]
        return (prod - self._idx[self._cons]) & U32

    def data_ready(self) -> int:
        """Bytes the consumer may read now; 0 if the indices are inconsistent."""
        prod = self._idx[self._prod]
        ready = (prod - self._idx[self._cons]) & U32
        fence()
        return 0 if ready > self.size else ready

    def buffer_space(self) -> int:
        """Bytes the producer may write now; 0 if the indices are inconsistent."""
        cons = self._idx[self._cons]
        space = (self.size - ((self._idx[self._prod] - cons) & U32)) & U32
        fence()
        return 0 if space > self.size else space

    # -- copies ------------------------------------------------------------------------
    def copy_out(self, dst: memoryview, n: int) -> None:
        """Move ``n`` bytes (already known to be ready) into ``dst`` and free them."""
        cons = self._idx[self._cons]
        pos = cons & self.mask
        first = min(self.size - pos, n)
        fence()
        dst[:first] = self.buf[pos : pos + first]
        if first < n:
            dst[first:n] = self.buf[: n - first]
        fence()
        self._idx[self._cons] = (cons + n) & U32

    def copy_in(self, src: memoryview, n: int) -> None:
        """Put ``n`` bytes of ``src`` (space already known to exist) and publish them."""
        prod = self._idx[self._prod]
        pos = prod & self.mask
        first = min(self.size - pos, n)
        fence()
        self.buf[pos : pos + first] = src[:first]
        if first < n:
            self.buf[: n - first] = src[first:n]
        fence()
        self._idx[self._prod] = (prod + n) & U32

    def release(self) -> None:
        """Drop this ring's views of the shared memory so the mapping can be unmapped."""
        self.buf.release()


class Notifier:
    """The notify bytes as one endpoint uses them (PROTOCOL.md §4.1-§4.2).

    ``request`` sets a bit in the byte the peer tests ("kick me when you …");
    ``take`` test-and-clears a bit in our own byte and says whether the peer asked, in
    which case the caller sends one event.  Both are locked RMWs: the peer, possibly C in
    another process, updates the same bytes concurrently.
    """

    __slots__ = ("_own", "_peer")

    def __init__(self, page: memoryview, *, server: bool) -> None:
        own, peer = layout.SRV_NOTIFY, layout.CLI_NOTIFY
        if not server:
            own, peer = peer, own
        self._own = AtomicByte(page, own)
        self._peer = AtomicByte(page, peer)

    def request(self, bit: int) -> None:
        """Ask the peer for an event when it next does ``bit`` (WRITE or READ)."""
        self._peer.fetch_or(bit)
        fence()

    def take(self, bit: int) -> bool:
        """Clear the peer's request for ``bit``; True if it had asked (so kick it)."""
        fence()
        return self._own.test_and_clear(bit)

    def release(self) -> None:
        self._own.release()
        self._peer.release()
