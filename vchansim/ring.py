"""One direction of a vchan ring, and the notify-bit protocol, over plain memory.

Nothing here knows about backends, processes or files: a :class:`Ring` is a byte buffer
plus its consumer/producer pair in the control page, and a :class:`Notifier` is the pair
of notify bytes one endpoint uses.  Both work on any writable buffer, so the same code
runs over an anonymous mapping in a unit test, POSIX shared memory, or a page granted by
a real hypervisor (docs/protocol.md §3-§4).

The per-message operations -- ``put``/``get``, ``request``/``take`` and the index
reads -- are implemented in C (``vchansim/_fastpath.c``): in Python they cost ten times
what libxenvchan's do.  This module gives them their Python shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from . import layout
from .core import NotifyCore, RingCore

if TYPE_CHECKING:
    _RingBase = RingCore
    _NotifyBase = NotifyCore
else:
    _RingBase = _NotifyBase = object


class RingFace(_RingBase):
    """A power-of-two byte ring with free-running u32 ``cons``/``prod`` indices.

    ``indices`` is a buffer whose first 16 bytes are the control page's four u32
    (left.cons, left.prod, right.cons, right.prod); ``cons_slot``/``prod_slot`` pick this
    ring's pair.  The size comes from the locally stored order, never from the page, and
    every shared index is read exactly once per computation, so a hostile peer can stall
    the ring but never make us touch memory outside it (XSA-86, XSA-155).

    Inherited from the core: ``put(src, n=None)`` copies n bytes (None: all of src) in
    and publishes them if they all fit now (returns n, or -1 having done nothing);
    ``get(dst, n=None, need=1)`` moves up to n bytes (None: ``len(dst)``) out if at least
    ``need`` (None: n) are ready (returns the count, 0 if too few); ``data_ready()``,
    ``buffer_space()`` (0 when the indices are inconsistent), ``fill()`` (unsanitised),
    ``cons``, ``prod``, ``size``, ``order``.
    """

    # Ring holds the slots: a mixin's own would clash with the C core's instance layout.
    __slots__ = ("buf", "mask") if TYPE_CHECKING else ()
    buf: memoryview
    mask: int

    def __init__(
        self, indices: memoryview, cons_slot: int, prod_slot: int, buf: memoryview, order: int
    ) -> None:
        size = layout.ring_size(order)
        if buf.nbytes < size:
            raise ValueError(f"ring of order {order} needs {size} bytes, buffer has {buf.nbytes}")
        #: The ring's bytes (a view of the shared memory, for inspection).
        self.buf = buf[:size]
        self.mask = size - 1
        super().__init__(indices, cons_slot, prod_slot, self.buf, order)

    @classmethod
    def left(cls, indices: memoryview, buf: memoryview, order: int) -> Self:
        """The client -> server ring."""
        return cls(indices, 0, 1, buf, order)

    @classmethod
    def right(cls, indices: memoryview, buf: memoryview, order: int) -> Self:
        """The server -> client ring."""
        return cls(indices, 2, 3, buf, order)

    def copy_out(self, dst: memoryview, n: int) -> None:
        """Move exactly ``n`` bytes, known to be ready, into ``dst`` and free them."""
        if self.get(dst, n, n) != n:
            raise ValueError(f"copy_out of {n} bytes: only {self.data_ready()} are ready")

    def copy_in(self, src: memoryview, n: int) -> None:
        """Put exactly ``n`` bytes of ``src``, known to fit, and publish them."""
        if self.put(src, n) != n:
            raise ValueError(f"copy_in of {n} bytes: only {self.buffer_space()} fit")

    def release(self) -> None:
        """Drop this ring's hold on the shared memory so the mapping can be unmapped."""
        super().release()
        self.buf.release()


class NotifierFace(_NotifyBase):
    """The notify bytes as one endpoint uses them (docs/protocol.md §4.1-§4.2).

    ``request(bit)`` sets a bit in the byte the peer tests ("kick me when you …"); the
    caller re-reads the ring afterwards.  ``take(bit)``, called after publishing an
    index, test-and-clears a bit in our own byte and says whether the peer asked, in
    which case the caller sends one event.  The changes are locked RMWs: the peer,
    possibly C in another process, updates the same bytes concurrently.

    Each byte has one setter (the end that asks) and one clearer (the end that kicks), so
    a bit seen set stays set until its clearer clears it.  That makes two plain reads
    safe: ``request`` skips the RMW when the bit is still set from an earlier request, and
    ``take`` -- after a full fence, so the index just published is visible before the
    bit is tested -- skips the RMW when the peer did not ask, which is most of the time.
    """

    __slots__ = ()

    def __init__(self, page: memoryview, *, server: bool) -> None:
        own, peer = layout.SRV_NOTIFY, layout.CLI_NOTIFY
        if not server:
            own, peer = peer, own
        super().__init__(page, own, peer)


class Ring(RingFace, RingCore):
    """A ring over the selected core."""

    __slots__ = ("buf", "mask")


class Notifier(NotifierFace, NotifyCore):
    """A notifier over the selected core."""

    __slots__ = ()
