"""One direction of a vchan ring, and the notify-bit protocol, over plain memory.

Nothing here knows about backends, processes or files: a :class:`Ring` is a byte buffer
plus its consumer/producer pair in the control page, and a :class:`Notifier` is the pair
of notify bytes one endpoint uses.  Both work on any writable ``memoryview``, so the same
code runs over an anonymous mapping in a unit test, POSIX shared memory, or a page granted
by a real hypervisor (PROTOCOL.md §3-§4).
"""

from __future__ import annotations

from . import layout
from .atomics import TSO, AtomicByte, fence, full_fence

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
        idx = self._idx
        ready = (idx[self._prod] - idx[self._cons]) & U32
        if not TSO:
            fence()
        return 0 if ready > self.size else ready

    def buffer_space(self) -> int:
        """Bytes the producer may write now; 0 if the indices are inconsistent."""
        idx = self._idx
        space = (self.size - ((idx[self._prod] - idx[self._cons]) & U32)) & U32
        if not TSO:
            fence()
        return 0 if space > self.size else space

    # -- copies ------------------------------------------------------------------------
    # put/get are the whole fast path of a message: read both indices once, copy, publish.
    # The fences are spelled ``if not TSO: fence()`` because on x86 they are no-ops and
    # even an empty call is a noticeable share of a small message's cost.
    def put(self, src: memoryview, n: int) -> bool:
        """Copy ``n`` bytes of ``src`` in and publish them if they fit now; say if they did."""
        idx = self._idx
        prod = idx[self._prod]
        used = (prod - idx[self._cons]) & U32
        if n > (self.size - used if used <= self.size else 0):  # inconsistent: no room
            return False
        if not TSO:
            fence()
        pos = prod & self.mask
        end = pos + n
        if end <= self.size:
            self.buf[pos:end] = src if len(src) == n else src[:n]
        else:
            first = self.size - pos
            self.buf[pos:] = src[:first]
            self.buf[: n - first] = src[first:n]
        if not TSO:
            fence()
        idx[self._prod] = (prod + n) & U32
        return True

    def get(self, dst: memoryview, n: int, need: int) -> int:
        """If at least ``need`` bytes are ready, move up to ``n`` into ``dst`` and free
        them; return how many (0 when fewer than ``need`` are there)."""
        idx = self._idx
        cons = idx[self._cons]
        ready = (idx[self._prod] - cons) & U32
        if ready > self.size or ready < need:
            return 0
        if not TSO:
            fence()
        if n > ready:
            n = ready
        pos = cons & self.mask
        end = pos + n
        if end <= self.size:
            dst[:n] = self.buf[pos:end]
        else:
            first = self.size - pos
            dst[:first] = self.buf[pos:]
            dst[first:n] = self.buf[: n - first]
        if not TSO:
            fence()
        idx[self._cons] = (cons + n) & U32
        return n

    def copy_out(self, dst: memoryview, n: int) -> None:
        """Move exactly ``n`` bytes, known to be ready, into ``dst`` and free them."""
        if self.get(dst, n, n) != n:
            raise ValueError(f"copy_out of {n} bytes: only {self.data_ready()} are ready")

    def copy_in(self, src: memoryview, n: int) -> None:
        """Put exactly ``n`` bytes of ``src``, known to fit, and publish them."""
        if not self.put(src, n):
            raise ValueError(f"copy_in of {n} bytes: only {self.buffer_space()} fit")

    def release(self) -> None:
        """Drop this ring's views of the shared memory so the mapping can be unmapped."""
        self.buf.release()


class Notifier:
    """The notify bytes as one endpoint uses them (PROTOCOL.md §4.1-§4.2).

    ``request`` sets a bit in the byte the peer tests ("kick me when you …");
    ``take`` test-and-clears a bit in our own byte and says whether the peer asked, in
    which case the caller sends one event.  The changes are locked RMWs: the peer,
    possibly C in another process, updates the same bytes concurrently.

    Each byte has one setter (the end that asks) and one clearer (the end that kicks), so
    a bit seen set stays set until its clearer clears it.  That makes two plain reads
    safe: ``request`` skips the RMW when the bit is still set from an earlier request, and
    ``take`` -- after a full fence, so the index just published is visible before the
    bit is tested -- skips the RMW when the peer did not ask, which is most of the time.
    """

    __slots__ = ("_own", "_own_at", "_page", "_peer", "_peer_at")

    def __init__(self, page: memoryview, *, server: bool) -> None:
        own, peer = layout.SRV_NOTIFY, layout.CLI_NOTIFY
        if not server:
            own, peer = peer, own
        self._page = page
        self._own_at, self._peer_at = own, peer
        self._own = AtomicByte(page, own)
        self._peer = AtomicByte(page, peer)

    def request(self, bit: int) -> None:
        """Ask the peer for an event when it next does ``bit`` (WRITE or READ).

        The caller re-reads the ring afterwards; the RMW (or, if the bit was already set,
        the earlier RMW that set it) orders this request before that read."""
        if not self._page[self._peer_at] & bit:
            self._peer.fetch_or(bit)
        if not TSO:
            fence()

    def take(self, bit: int) -> bool:
        """Clear the peer's request for ``bit``; True if it had asked (so kick it).

        Call it after publishing an index: the full fence keeps that store from passing
        the read of the request bit, so a peer that asked just before is never missed."""
        full_fence()
        return self._page[self._own_at] & bit != 0 and self._own.test_and_clear(bit)

    def release(self) -> None:
        self._own.release()
        self._peer.release()
        self._page = memoryview(b"")
