"""Locked read-modify-write on shared bytes, and memory fences, from Python.

The notify bytes of the control page are updated concurrently by both peers, which may be
C programs in other processes; a Python ``buf[i] |= bit`` is a load and a store, and would
lose the peer's bit.  GCC's ``libatomic`` exports the same sequentially consistent
byte-wide operations the C library uses (``__sync_*`` compile to them), so we call it
through ``ctypes``.

On x86 (TSO) the only reordering the CPU does is store->load, and both such points in the
vchan protocol sit behind one of these locked RMWs, so the plain fences are no-ops there.
Elsewhere (Arm) :func:`fence` issues a real sequentially consistent fence.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

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
_fetch_or = _lib.__atomic_fetch_or_1
_fetch_and = _lib.__atomic_fetch_and_1
for _fn in (_fetch_or, _fetch_and):
    _fn.argtypes = (ctypes.c_void_p, ctypes.c_uint8, ctypes.c_int)
    _fn.restype = ctypes.c_uint8
_fetch_add_8 = _lib.__atomic_fetch_add_8
_fetch_add_8.argtypes = (ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int)
_fetch_add_8.restype = ctypes.c_uint64
_thread_fence = _lib.atomic_thread_fence
_thread_fence.argtypes = (ctypes.c_int,)
_thread_fence.restype = None

_TSO = platform.machine().lower() in {"x86_64", "amd64", "i386", "i686", "x86"}


def fence() -> None:
    """Full memory barrier (no-op on x86, where ordering already holds; see module doc)."""
    if not _TSO:
        _thread_fence(_SEQ_CST)


class AtomicByte:
    """One byte of a shared buffer that both peers update with locked RMW operations.

    Holds a ctypes export of the buffer, which pins the mapping: call :meth:`release`
    before unmapping it.
    """

    __slots__ = ("_anchor", "address")

    def __init__(self, buf: memoryview, offset: int) -> None:
        if buf.readonly:
            raise VchanError("atomic byte needs a writable mapping")
        if not 0 <= offset < buf.nbytes:
            raise VchanError(f"atomic byte offset {offset} outside a {buf.nbytes}-byte buffer")
        self._anchor: ctypes.c_char | None = ctypes.c_char.from_buffer(buf, offset)
        self.address = ctypes.addressof(self._anchor)

    def fetch_or(self, bits: int) -> int:
        """Atomically OR ``bits`` in; return the previous value."""
        return _fetch_or(self.address, bits, _SEQ_CST)

    def fetch_and(self, bits: int) -> int:
        """Atomically AND with ``bits``; return the previous value."""
        return _fetch_and(self.address, bits, _SEQ_CST)

    def test_and_clear(self, bit: int) -> bool:
        """Clear ``bit``; say whether it was set (the peer had asked for a kick)."""
        return bool(_fetch_and(self.address, ~bit & 0xFF, _SEQ_CST) & bit)

    def release(self) -> None:
        """Drop the buffer export so the mapping can be closed."""
        self._anchor = None
        self.address = 0


class AtomicCounters:
    """u64 counters in a shared page that several processes bump with locked adds.

    Used for the per-channel event statistics: each end of an event channel counts the
    events it sends, so an observer (the inspector, a trace) sees both directions without
    being on the path.  Holds a ctypes export of the buffer; call :meth:`release` first
    before unmapping it.
    """

    __slots__ = ("_anchor", "_base", "_view")

    def __init__(self, buf: memoryview, count: int) -> None:
        if buf.nbytes < 8 * count:
            raise VchanError(f"{count} counters need {8 * count} bytes, buffer has {buf.nbytes}")
        self._view = buf[: 8 * count].cast("Q")
        if buf.readonly:
            self._anchor: ctypes.Array[ctypes.c_char] | None = None
            self._base = 0
        else:
            self._anchor = (ctypes.c_char * (8 * count)).from_buffer(buf)
            self._base = ctypes.addressof(self._anchor)

    def add(self, index: int, amount: int = 1) -> None:
        """Atomically add ``amount`` to counter ``index`` (writable mappings only)."""
        if not self._base:
            raise VchanError("these counters are mapped read-only")
        _fetch_add_8(self._base + 8 * index, amount, _SEQ_CST)

    def __getitem__(self, index: int) -> int:
        return self._view[index]

    def release(self) -> None:
        self._anchor = None
        self._base = 0
        self._view.release()
