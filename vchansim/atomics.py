"""Locked read-modify-write on shared bytes, and memory fences, from Python.

The notify bytes of the control page are updated concurrently by both peers, which may be
C programs in other processes; a Python ``buf[i] |= bit`` is a load and a store, and would
lose the peer's bit.  GCC's ``libatomic`` exports the same sequentially consistent
byte-wide operations the C library uses (``__sync_*`` compile to them), so we call it
through ``ctypes``.

On x86 (TSO) the only reordering the CPU does is store->load, so the plain :func:`fence`
is a no-op there; elsewhere (Arm) it issues a real sequentially consistent fence.  The
vchan protocol has two store->load points, and each needs a real barrier everywhere:
setting a notify bit is a locked RMW (itself a barrier); publishing an index is followed
by :func:`full_fence` and a plain look at the peer's request bit -- cheaper than an RMW,
which is then paid only when the peer did ask for a kick.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
from collections.abc import Callable

from .errors import VchanError

_SEQ_CST = 5


def _load_libatomic() -> ctypes.CDLL:
    name = ctypes.util.find_library("atomic") or "libatomic.so.1"
    try:
        return ctypes.CDLL(name)
    except OSError as exc:  # pragma: no cover - every gcc runtime ships it
        raise VchanError(
            "libatomic.so.1 is missing; install your distribution's libatomic1 package"
        ) from exc


_lib = _load_libatomic()
# The functions are called without ``argtypes``: ctypes then passes prepared ctypes objects
# (the addresses, the 64-bit amount) as they are and Python ints as C ints, which is right
# for the narrow arguments and costs half as much per call as argument conversion.  These
# calls sit on every message's path.
_fetch_or = _lib.__atomic_fetch_or_1
_fetch_and = _lib.__atomic_fetch_and_1
for _fn in (_fetch_or, _fetch_and):
    _fn.restype = ctypes.c_uint8
_fetch_add_8 = _lib.__atomic_fetch_add_8
_fetch_add_8.restype = ctypes.c_uint64
_thread_fence = _lib.atomic_thread_fence
_thread_fence.restype = None

#: x86's total store order: the CPU reorders only a store with a later load.
TSO = platform.machine().lower() in {"x86_64", "amd64", "i386", "i686", "x86"}


def fence() -> None:
    """Order loads and stores except store->load (no-op on x86, where TSO already does)."""
    if not TSO:
        _thread_fence(_SEQ_CST)


#: A sequentially consistent fence, also on x86: keeps a store from passing a later load.
#: The vchan protocol has two such points -- publish an index, then test the peer's
#: notify bit; set our notify bit, then re-read the peer's index -- and if a store passed
#: its load there, both ends could miss each other and sleep.  (A ``partial``, not a
#: function: it runs once per message, and a Python frame would add a fifth to its cost.)
full_fence = functools.partial(_thread_fence, _SEQ_CST)


#: Stands in for a released address: ctypes cannot convert it, so a call fails cleanly.
_RELEASED = object()


class AtomicByte:
    """One byte of a shared buffer that both peers update with locked RMW operations.

    Holds a ctypes export of the buffer, which pins the mapping: call :meth:`release`
    before unmapping it.
    """

    __slots__ = ("_anchor", "_pointer", "address")

    def __init__(self, buf: memoryview, offset: int) -> None:
        if buf.readonly:
            raise VchanError("atomic byte needs a writable mapping")
        if not 0 <= offset < buf.nbytes:
            raise VchanError(f"atomic byte offset {offset} outside a {buf.nbytes}-byte buffer")
        self._anchor: ctypes.c_char | None = ctypes.c_char.from_buffer(buf, offset)
        self.address = ctypes.addressof(self._anchor)
        self._pointer = ctypes.c_void_p(self.address)

    def fetch_or(self, bits: int) -> int:
        """Atomically OR ``bits`` in; return the previous value."""
        return _fetch_or(self._pointer, bits & 0xFF, _SEQ_CST)

    def fetch_and(self, bits: int) -> int:
        """Atomically AND with ``bits``; return the previous value."""
        return _fetch_and(self._pointer, bits & 0xFF, _SEQ_CST)

    def test_and_clear(self, bit: int) -> bool:
        """Clear ``bit``; say whether it was set (the peer had asked for a kick)."""
        return bool(_fetch_and(self._pointer, ~bit & 0xFF, _SEQ_CST) & bit)

    def release(self) -> None:
        """Drop the buffer export so the mapping can be closed.  A later RMW fails with
        ctypes' ArgumentError instead of touching memory that may be unmapped."""
        self._anchor = None
        self.address = 0
        self._pointer = _RELEASED  # type: ignore[assignment]


class AtomicCounters:
    """u64 counters in a shared page that several processes bump with locked adds.

    Used for the per-channel event statistics: each end of an event channel counts the
    events it sends, so an observer (the inspector, a trace) sees both directions without
    being on the path.  Holds a ctypes export of the buffer; call :meth:`release` first
    before unmapping it.
    """

    __slots__ = ("_anchor", "_base", "_one", "_pointers", "_view")

    def __init__(self, buf: memoryview, count: int) -> None:
        if buf.nbytes < 8 * count:
            raise VchanError(f"{count} counters need {8 * count} bytes, buffer has {buf.nbytes}")
        self._view = buf[: 8 * count].cast("Q")
        self._one = ctypes.c_uint64(1)
        if buf.readonly:
            self._anchor: ctypes.Array[ctypes.c_char] | None = None
            self._base = 0
            self._pointers: list[ctypes.c_void_p] = []
        else:
            self._anchor = (ctypes.c_char * (8 * count)).from_buffer(buf)
            self._base = ctypes.addressof(self._anchor)
            self._pointers = [ctypes.c_void_p(self._base + 8 * i) for i in range(count)]

    def add(self, index: int, amount: int = 1) -> None:
        """Atomically add ``amount`` to counter ``index`` (writable mappings only)."""
        if not self._base:
            raise VchanError("these counters are mapped read-only")
        value = self._one if amount == 1 else ctypes.c_uint64(amount)
        _fetch_add_8(self._pointers[index], value, _SEQ_CST)

    def incrementer(self, index: int) -> Callable[[], int]:
        """A callable adding 1 to counter ``index``: one C call and no Python frame, for
        paths that count every event.  It must not be called after :meth:`release`."""
        if not self._base:
            raise VchanError("these counters are mapped read-only")
        return functools.partial(_fetch_add_8, self._pointers[index], self._one, _SEQ_CST)

    def __getitem__(self, index: int) -> int:
        return self._view[index]

    def release(self) -> None:
        self._anchor = None
        self._base = 0
        self._pointers = []
        self._view.release()
