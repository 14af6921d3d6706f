"""The per-message operations in Python: the executable form of docs/protocol.md §3-§4.

A vchan endpoint does four things on every message: move bytes through a ring while
keeping the free-running indices consistent (§3), set and test-and-clear the notify bits
(§4), fence and bump shared counters, and kick or wait on an event channel.  This module
does them in plain Python, with the same interface as the optional C accelerator
(``vchansim/_fastpath.c``), so it can be read as the specification and run anywhere
Python runs; :mod:`vchansim.core` picks one of the two.

Shared memory is written by a peer we do not trust: every shared index is loaded exactly
once per computation, and sizes come from the local configuration, never from the page.
The notify bytes and counters are updated concurrently by the peer -- possibly C in
another process -- so their changes must be locked read-modify-writes.  Python has none,
and the C runtime's ``libatomic`` exports exactly the sequentially consistent operations a
C endpoint compiles to; they are called through ``ctypes``.  It is part of every GCC
runtime (Debian: ``libatomic1``), which is not the compiler: a machine without ``cc``
normally has it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
import os
import platform
import select
import sys
import time

from .layout import U32

_SEQ_CST = 5
_RELEASED = "operation on released shared memory"


def _load_libatomic() -> ctypes.CDLL:
    name = ctypes.util.find_library("atomic") or "libatomic.so.1"
    try:
        return ctypes.CDLL(name)
    except OSError:
        raise ImportError(
            "the Python core needs libatomic.so.1 (Debian: libatomic1) for its locked "
            "read-modify-writes on shared memory"
        ) from None


_lib = _load_libatomic()
_fetch_or_1 = _lib.__atomic_fetch_or_1
_fetch_and_1 = _lib.__atomic_fetch_and_1
_fetch_add_8 = _lib.__atomic_fetch_add_8
_fetch_or_1.argtypes = _fetch_and_1.argtypes = (ctypes.c_void_p, ctypes.c_uint8, ctypes.c_int)
_fetch_or_1.restype = _fetch_and_1.restype = ctypes.c_uint8
_fetch_add_8.argtypes = (ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int)
_fetch_add_8.restype = ctypes.c_uint64
# Without ``argtypes`` ctypes passes the Python int as a C int, at half the cost of a
# converted call; the fence is on every message's path.
_thread_fence = _lib.atomic_thread_fence
_thread_fence.restype = None

#: x86's total store order: the CPU reorders only a store with a later load, so acquire
#: and release ordering -- all the ring copies need -- come for free there.
TSO = platform.machine().lower() in {"x86_64", "amd64", "i386", "i686", "x86"}


#: A sequentially consistent fence, also on x86: a store may not pass a later load.
#: The protocol has two such points -- publish an index, then test the peer's notify bit;
#: set our notify bit, then re-read the peer's index -- and if the store passed the load
#: at either, both ends could miss each other and sleep for ever (§4.2).  (A ``partial``,
#: not a function: a Python frame would double its cost.)
full_fence = functools.partial(_thread_fence, _SEQ_CST)


def _ordered() -> None:
    """Acquire/release ordering between a shared index and the ring bytes it covers."""
    if not TSO:
        full_fence()


def fetch_add_u64(address: int, amount: int) -> int:
    """Atomically add ``amount`` to the u64 at ``address``; return its previous value."""
    if not address:
        raise ValueError(_RELEASED)
    return int(_fetch_add_8(address, amount, _SEQ_CST))


def buffer_address(buffer: bytearray | memoryview | mmap.mmap) -> int:
    """The address of a writable buffer's first byte (the caller keeps it exported)."""
    with memoryview(buffer) as view:
        if view.readonly:
            raise BufferError("the buffer is read-only")
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = (
    ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long
)
_MAP_FAILED = ctypes.c_void_p(-1).value
_MAP_FIXED = 0x10


def map_fixed(address: int, length: int, prot: int, fd: int, offset: int) -> None:
    """Map ``length`` bytes of ``fd`` at ``offset``, shared, exactly at ``address`` (over
    a range the caller reserved); OSError on failure."""
    if not address:
        raise ValueError(_RELEASED)
    flags = mmap.MAP_SHARED | _MAP_FIXED
    if _mmap(address, length, prot, flags, _fd(fd), offset) == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _fd(value: int) -> int:
    if not 0 <= value <= 0x7FFFFFFF:
        raise ValueError(f"{value} is not a file descriptor")
    return value


_ONE = (1).to_bytes(8, sys.byteorder)


def eventfd_kick(fd: int, counter_address: int) -> None:
    """Count one event (skipped for address 0), then write 1 to the peer's eventfd."""
    fd = _fd(fd)
    if counter_address:
        _fetch_add_8(counter_address, 1, _SEQ_CST)
    os.write(fd, _ONE)  # an interrupted write is retried (PEP 475)


def wait_one(epfd: int, timeout: float | None) -> int:
    """Wait up to ``timeout`` seconds (None: for ever) for one event on the epoll
    descriptor ``epfd``; return the ready descriptor, or -1 on timeout.  Signals run their
    handlers and the wait resumes with the time left (PEP 475)."""
    epoll = select.epoll.fromfd(os.dup(_fd(epfd)))  # a second handle on the same epoll
    try:
        ready = epoll.poll(-1 if timeout is None else max(timeout, 0.0), 1)
    finally:
        epoll.close()
    return ready[0][0] if ready else -1


def _count(n: int | None, length: int) -> int:
    """The byte count of a call: ``n``, or the whole buffer for None, checked against it."""
    if n is None:
        return length
    if not 0 <= n <= length:
        raise ValueError(f"nbytes={n} does not fit a {length}-byte buffer")
    return n


class RingCore:
    """One direction of a ring: the bytes, and this ring's (cons, prod) pair of the four
    u32 indices at the start of ``indices`` (left.cons, left.prod, right.cons, right.prod).

    The size is ``2**order`` as configured here; the page's indices are only ever used
    masked by it, and a fill larger than the size (a corrupt or hostile page) reads as
    an empty, full ring: the peer can stall us, never make us touch memory outside it.
    """

    __slots__ = ("_bytes", "_cons", "_idx", "_order", "_prod", "_size")

    def __init__(
        self, indices: memoryview, cons_slot: int, prod_slot: int, buf: memoryview, order: int
    ) -> None:
        if not 10 <= order <= 31:
            raise ValueError(f"ring order {order} is outside 10..31")
        if not (0 <= cons_slot <= 3 and 0 <= prod_slot <= 3):
            raise ValueError("index slots are 0..3")
        control = memoryview(indices).cast("B")
        if control.readonly:
            raise TypeError("the indices must be writable")
        if control.nbytes < 16 or ctypes.addressof(ctypes.c_char.from_buffer(control)) & 3:
            raise ValueError("the indices need 16 bytes aligned to 4")
        data = memoryview(buf).cast("B")
        size = 1 << order
        if data.nbytes < size:
            raise ValueError(f"ring of order {order} needs {size} bytes, buffer has {data.nbytes}")
        self._idx: memoryview | None = control[:16].cast("I")
        self._cons = cons_slot
        self._prod = prod_slot
        self._bytes: memoryview | None = data
        self._size = size
        self._order = order

    def _live(self) -> tuple[memoryview, memoryview]:
        if self._idx is None or self._bytes is None:
            raise ValueError(_RELEASED)
        return self._idx, self._bytes

    def _used(self, idx: memoryview) -> tuple[int, int, int]:
        """(bytes in flight, cons, prod), each index loaded once; more than the size means
        the page is corrupt."""
        prod = idx[self._prod]
        cons = idx[self._cons]
        return (prod - cons) & U32, cons, prod

    @property
    def cons(self) -> int:
        """The consumer index, as the page holds it."""
        return int(self._live()[0][self._cons])

    @property
    def prod(self) -> int:
        """The producer index, as the page holds it."""
        return int(self._live()[0][self._prod])

    @property
    def size(self) -> int:
        """The ring's size in bytes (2**order)."""
        return self._size

    @property
    def order(self) -> int:
        """The ring's order."""
        return self._order

    def fill(self) -> int:
        """Bytes in flight as the page says, unsanitised (may exceed ``size`` if corrupt)."""
        return self._used(self._live()[0])[0]

    def data_ready(self) -> int:
        """Bytes the consumer may read now; 0 if the indices are inconsistent."""
        used = self._used(self._live()[0])[0]
        _ordered()
        return used if used <= self._size else 0

    def buffer_space(self) -> int:
        """Bytes the producer may write now; 0 if the indices are inconsistent."""
        used = self._used(self._live()[0])[0]
        _ordered()
        return self._size - used if used <= self._size else 0

    def put(self, src: bytes | bytearray | memoryview, n: int | None = None) -> int:
        """Copy the first ``n`` bytes of ``src`` (None: all) in and publish them if they all
        fit now; return ``n``, or -1 having done nothing."""
        idx, ring = self._live()
        if ring.readonly:
            raise TypeError("this ring is mapped read-only: it cannot be written")
        data = memoryview(src).cast("B")
        n = _count(n, data.nbytes)
        used, _cons, prod = self._used(idx)
        if n > (self._size - used if used <= self._size else 0):
            return -1
        _ordered()  # the consumer's index was read before we overwrite what it freed
        pos = prod & (self._size - 1)
        first = min(n, self._size - pos)
        ring[pos : pos + first] = data[:first]
        ring[: n - first] = data[first:n]
        _ordered()  # the bytes are in place before the index that publishes them
        idx[self._prod] = (prod + n) & U32
        return n

    def get(self, dst: bytearray | memoryview, n: int | None = None, need: int | None = 1) -> int:
        """If at least ``need`` bytes are ready (None: all ``n``), move up to ``n`` (None:
        ``len(dst)``) of them into ``dst`` and free them; return how many (0 when fewer
        than ``need`` are there, or ``need`` is more than the ring holds)."""
        idx, ring = self._live()
        try:
            out = memoryview(dst).cast("B")
        except TypeError:
            raise TypeError("reading needs a writable, contiguous buffer") from None
        if out.readonly:
            raise TypeError("reading needs a writable, contiguous buffer")
        n = _count(n, out.nbytes)
        if need is None:
            need = n
        ready, cons, _prod = self._used(idx)
        if ready > self._size or need > ready or n == 0:
            return 0
        _ordered()  # the bytes are read only after the index that published them
        count = min(n, ready)
        pos = cons & (self._size - 1)
        first = min(count, self._size - pos)
        out[:first] = ring[pos : pos + first]
        out[first:count] = ring[: count - first]
        _ordered()  # our reads finish before the producer may reuse the bytes
        idx[self._cons] = (cons + count) & U32
        return count

    def release(self) -> None:
        """Drop the views of the shared memory so the mapping can be unmapped."""
        for view in (self._idx, self._bytes):
            if view is not None:
                view.release()
        self._idx = self._bytes = None


class NotifyCore:
    """The two notify bytes of one endpoint (§4.1): ``own`` is the byte the peer sets to
    ask us for a kick, ``peer`` the one we set to ask the peer.

    Each byte has one setter and one clearer, so a bit seen set stays set until its
    clearer clears it; that makes two plain reads safe and saves the locked operation on
    most messages.
    """

    __slots__ = ("_anchors", "_own", "_peer", "_view")

    def __init__(self, page: memoryview, own: int, peer: int) -> None:
        view = memoryview(page).cast("B")
        if view.readonly:
            raise TypeError("the notify bytes must be writable")
        if not (0 <= own < view.nbytes and 0 <= peer < view.nbytes):
            raise ValueError(f"notify offsets {own}, {peer} are outside the page")
        # The ctypes exports pin the mapping, as a buffer export does, until release().
        own_byte = ctypes.c_uint8.from_buffer(view, own)
        peer_byte = ctypes.c_uint8.from_buffer(view, peer)
        self._anchors: tuple[ctypes.c_uint8, ctypes.c_uint8] | None = (own_byte, peer_byte)
        self._own = ctypes.addressof(own_byte)
        self._peer = ctypes.addressof(peer_byte)
        self._view: memoryview | None = view

    def _bytes(self) -> tuple[ctypes.c_uint8, ctypes.c_uint8]:
        if self._anchors is None:
            raise ValueError(_RELEASED)
        return self._anchors

    def request(self, bit: int) -> None:
        """Ask the peer for an event when it next does ``bit``; the caller then re-reads
        the ring.  The locked OR is skipped when our earlier request still stands."""
        _own, peer = self._bytes()
        if peer.value & bit:
            _ordered()  # the caller's re-read of the ring comes after this look
        else:
            _fetch_or_1(self._peer, bit & 0xFF, _SEQ_CST)

    def take(self, bit: int) -> bool:
        """After publishing an index: clear the peer's request for ``bit``, and say whether
        it had asked (then the caller sends one event)."""
        own, _peer = self._bytes()
        full_fence()  # the index just published is visible before the bit is read
        if not own.value & bit:
            return False
        return bool(_fetch_and_1(self._own, ~bit & 0xFF, _SEQ_CST) & bit)

    def release(self) -> None:
        """Drop the hold on the page so the mapping can be unmapped."""
        self._anchors = None
        self._own = self._peer = 0
        self._view = None



#: The notify bits (§4.1), and what a waiter for each is asleep in (statspage.Blocked).
_NOTIFY_WRITE, _NOTIFY_READ = 0x1, 0x2
_BLOCKED_READ, _BLOCKED_WRITE = 1, 2


class Waiter:
    """Blocking reads and writes of one endpoint, each one call: the notifier, the epoll
    its port's incoming eventfd is in (edge-triggered), the peer's eventfd, and the
    addresses of its wait word and sent-events counter (0: none).

    A call arms a notify bit only when the ring falls short, kicks the peer only when it
    asked, and after a wake-up that brought too little sleeps again without returning.
    """

    __slots__ = ("_epfd", "_kick_fd", "_notify", "_sent", "_word")

    def __init__(
        self, notify: NotifyCore, epfd: int, kick_fd: int, wait_word: int, sent_counter: int
    ) -> None:
        if not isinstance(notify, NotifyCore):
            raise TypeError("the notifier must be a NotifyCore")
        self._notify = notify
        self._epfd = _fd(epfd)
        self._kick_fd = _fd(kick_fd)
        self._word = ctypes.c_uint64.from_address(wait_word) if wait_word else None
        self._sent = sent_counter

    def read(
        self,
        ring: RingCore,
        dst: bytearray | memoryview,
        n: int | None,
        need: int,
        live: int,
        timeout: float | None,
    ) -> int:
        """Once ``need`` bytes are ready, move up to ``n`` of them (None: ``len(dst)``)
        into ``dst``, kick the peer if it asked, and return the count; 0 if the peer's
        live byte (offset ``live`` of the notify page; -1: not watched) reads closed or
        ``timeout`` seconds (None: forever) passed first."""
        out, count, page, deadline = self._call(ring, dst, n, need, live, timeout, write=False)
        while True:
            got = ring.get(out, count, need)
            if got:
                self._kick_if_asked(_NOTIFY_READ, got)
                return got
            if not self._step(ring, page, live, deadline, _NOTIFY_WRITE, need):
                return 0

    def write(
        self,
        ring: RingCore,
        src: bytes | bytearray | memoryview,
        n: int | None,
        need: int,
        live: int,
        timeout: float | None,
    ) -> int:
        """Put the first ``n`` bytes of ``src`` (None: all) in as room comes, at least
        ``need`` (or what is left, if less) at a time, kicking the peer whenever it asked;
        return how many went in: ``n``, or fewer if the peer closed or ``timeout``
        passed first.  ``need == n`` makes it all or nothing."""
        data, count, page, deadline = self._call(ring, src, n, need, live, timeout, write=True)
        pos = 0
        while True:
            left = count - pos
            want = min(left, need)
            space = ring.buffer_space()
            chunk = min(space, left) if space >= want else 0
            if chunk and ring.put(data[pos:], chunk) == chunk:
                pos += chunk
                self._kick_if_asked(_NOTIFY_WRITE, pos)
                if pos == count:
                    return pos
                continue
            if not self._step(ring, page, live, deadline, _NOTIFY_READ, want):
                return pos

    def _call(
        self,
        ring: RingCore,
        buf: bytes | bytearray | memoryview,
        n: int | None,
        need: int,
        live: int,
        timeout: float | None,
        *,
        write: bool,
    ) -> tuple[memoryview, int, memoryview, float | None]:
        """The checked arguments of a call: the buffer as bytes, the count, the notify
        page and the deadline."""
        if not isinstance(ring, RingCore):
            raise TypeError("the ring must be a RingCore")
        notify = getattr(self, "_notify", None)
        if notify is None:
            raise ValueError("this Waiter was never initialised")
        _idx, data = ring._live()
        page = notify._view
        if page is None:
            raise ValueError(_RELEASED)
        if write and data.readonly:
            raise TypeError("this ring is mapped read-only: it cannot be written")
        view = memoryview(buf).cast("B")
        if not write and view.readonly:
            raise TypeError("reading needs a writable, contiguous buffer")
        count = _count(n, view.nbytes)
        if not 1 <= need <= min(count, ring.size):
            raise ValueError(f"need={need} is outside 1..min(n={count}, ring size {ring.size})")
        if not -1 <= live < page.nbytes:
            raise ValueError(f"live offset {live} is outside the page")
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        return view, count, page, deadline

    def _kick_if_asked(self, bit: int, moved: int) -> None:
        """Kick the peer if it asked for ``bit``; a failed kick's OSError says in
        ``characters_written`` how many bytes the call moved."""
        if not self._notify.take(bit):
            return
        try:
            eventfd_kick(self._kick_fd, self._sent)
        except OSError as exc:
            exc.characters_written = moved  # type: ignore[attr-defined]
            raise

    def _step(
        self,
        ring: RingCore,
        page: memoryview,
        live: int,
        deadline: float | None,
        bit: int,
        want: int,
    ) -> bool:
        """Arm ``bit`` and, unless the ring now holds ``want`` bytes of data (WRITE) or
        space (READ) or the peer is closed, sleep for one event: True to look again."""
        self._notify.request(bit)
        has = ring.data_ready() if bit == _NOTIFY_WRITE else ring.buffer_space()
        if has >= want:
            return True
        if live >= 0 and page[live] == 0:
            return False
        word = self._word
        if word is not None:
            blocked = _BLOCKED_READ if bit == _NOTIFY_WRITE else _BLOCKED_WRITE
            word.value = (time.monotonic_ns() // 1000) << 8 | blocked
        try:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            woke = wait_one(self._epfd, left) >= 0
        finally:
            if word is not None:
                word.value = 0
        if woke and (self._notify._view is None or ring._bytes is None):
            raise ValueError(_RELEASED)
        return woke


class ChannelCore:
    """The base of a vchan endpoint (:class:`vchansim.channel.Vchan`): its blocking stream
    ``read_into`` and ``write``, with no timeout and no spin, go straight into the
    :class:`Waiter`.  In C that means no interpreter frame of the library's runs between
    the application's call and its sleep; with many endpoints taking turns on few CPUs
    every frame is memory to bring back into the caches after each wake-up.  Every other
    case -- non-blocking, a timeout, a spinning or persistent end, a closed peer, a call
    that came back short -- is the subclass's ``_read_on`` and ``_write_on``.

    The attributes are the subclass's; the fast path runs only while each holds its plain
    value (``_closed`` False, ``blocking`` True, ``timeout`` None, ``server_persist``
    False, ``_core_waits`` a Waiter).
    """

    _closed: bool
    blocking: bool
    timeout: float | None
    server_persist: bool
    _core_waits: Waiter | None
    _rd: RingCore
    _wr: RingCore
    #: The peer's live byte's offset in the control page.
    _live: int
    #: The longest sleep before the peer's liveness is re-checked (seconds).
    _recheck: float

    def read_into(self, buf: bytearray | memoryview, nbytes: int | None = None) -> int:
        """Stream read into ``buf`` without allocating; returns the count."""
        waiter = self._fast()
        waited = False
        if waiter is not None and buf and nbytes != 0:
            try:
                got = waiter.read(self._rd, buf, nbytes, 1, self._live, self._recheck)
            except OSError as exc:
                raise self._core_error(exc, 0) from exc
            if got:
                return got
            waited = True
        return self._read_on(buf, nbytes, waited)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Stream write: blocking, all of ``data``; non-blocking, as much as fits now."""
        waiter = self._fast()
        if waiter is not None and data:
            page = waiter._notify._view
            if page is not None and 0 <= self._live < page.nbytes and page[self._live]:
                try:
                    pos = waiter.write(self._wr, data, None, 1, self._live, self._recheck)
                except OSError as exc:
                    raise self._core_error(exc, 0) from exc
                if pos == memoryview(data).nbytes:
                    return pos
                return self._write_on(data, pos)
        return self._write_on(data, None)

    def _fast(self) -> Waiter | None:
        """The Waiter if a call may run whole in the core, else None."""
        waiter = self._core_waits
        if (
            waiter is not None
            and self._closed is False
            and self.blocking is True
            and self.timeout is None
            and self.server_persist is False
        ):
            return waiter
        return None

    def _read_on(self, buf: bytearray | memoryview, nbytes: int | None, waited: bool) -> int:
        """The read the core did not finish (the subclass's); ``waited``: the core looked
        and slept, and came back empty for a close or a liveness re-check."""
        raise NotImplementedError

    def _write_on(self, data: bytes | bytearray | memoryview, done: int | None) -> int:
        """The write the core did not finish (the subclass's); ``done``: how many bytes
        the core put in, None if it did not run."""
        raise NotImplementedError

    def _core_error(self, exc: OSError, before: int) -> Exception:
        """The core's failed wait or kick as the subclass's channel error."""
        raise NotImplementedError
