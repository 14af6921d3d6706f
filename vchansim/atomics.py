"""Counters in shared memory that several processes bump with locked adds.

The per-channel event statistics live in a page every end of the channel maps: each end
counts the events it sends, so an observer (the inspector, a trace) sees both directions
without being on the path.  The adds are locked RMWs (from :mod:`vchansim.core`): the
other end, possibly C in another process, bumps the same page concurrently.
"""

from __future__ import annotations

from .core import buffer_address, fetch_add_u64
from .errors import VchanError


class AtomicCounters:
    """u64 counters at the start of a shared buffer.

    Holds a view of the buffer, which pins the mapping so that the address handed to C
    stays valid; call :meth:`release` before unmapping it.  A read-only mapping can be
    read, not added to.
    """

    __slots__ = ("_base", "_view")

    def __init__(self, buf: memoryview, count: int) -> None:
        if buf.nbytes < 8 * count:
            raise VchanError(f"{count} counters need {8 * count} bytes, buffer has {buf.nbytes}")
        self._view = buf[: 8 * count].cast("Q")
        self._base = 0 if buf.readonly else buffer_address(self._view)

    def address(self, index: int) -> int:
        """The address of counter ``index``, for C code that bumps it on a hot path.  It
        must not be used after :meth:`release`."""
        if not self._base:
            raise VchanError("these counters are mapped read-only")
        if not 0 <= index < len(self._view):
            raise IndexError(f"counter {index} of {len(self._view)}")
        return self._base + 8 * index

    def add(self, index: int, amount: int = 1) -> None:
        """Atomically add ``amount`` to counter ``index`` (writable mappings only)."""
        fetch_add_u64(self.address(index), amount)

    def store(self, index: int, value: int) -> None:
        """Set counter ``index`` (writable mappings only) with one aligned 8-byte store,
        which readers never see half done: for a word only its owner writes, where a
        locked read-modify-write would buy nothing."""
        if not self._base:
            raise VchanError("these counters are mapped read-only")
        self._view[index] = value

    def __getitem__(self, index: int) -> int:
        return self._view[index]

    def release(self) -> None:
        self._base = 0
        self._view.release()
