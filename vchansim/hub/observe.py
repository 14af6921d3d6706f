"""Read-only views of what the hub shares, for observers that must not disturb a channel.

The inspector and the scenario runner's trace sampler both watch a live channel from
outside: its control page (hub op INSPECT: the granted page's shm object) and its event
statistics page (EVT_STATS: events sent by each side, and what each side sleeps in).
Both replies carry a read-only descriptor, mapped here ``PROT_READ``, so it is the
kernel, not the observer's good manners, that keeps the channel untouched.  A view stays
valid after its grant or port goes away (as a foreign mapping does on Xen) until
:meth:`close`.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable
from typing import TypeVar

from .. import statspage
from ..layout import PAGE_SIZE, PageState
from ..statspage import STATS_SIZE, Wait
from .protocol import HubConnection, Op, Reply

#: The statistics page: u64 events sent by side 0, then by side 1, then the two sides'
#: wait words (docs/hub-protocol.md).
_WORDS = struct.Struct(f"<{statspage.WORDS}Q")


class ReadOnlyMap:
    """``size`` bytes of a hub-owned object at ``offset``, mapped read-only."""

    def __init__(self, fd: int, size: int, offset: int) -> None:
        self._map = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ, offset=offset)

    def read(self, offset: int, count: int) -> bytes:
        """``count`` bytes from ``offset`` of the mapping, copied now."""
        return self._map[offset : offset + count]

    def close(self) -> None:
        self._map.close()


class PageView(ReadOnlyMap):
    """A channel's control page."""

    def __init__(self, fd: int, page: int) -> None:
        super().__init__(fd, PAGE_SIZE, page * PAGE_SIZE)

    def snapshot(self) -> PageState:
        """The header now (decoded from one copy of its bytes: fields read together)."""
        return PageState.decode(self._map)


class StatsView(ReadOnlyMap):
    """A channel's event statistics, seen from the end (``side``) it was asked for."""

    def __init__(self, fd: int, side: int) -> None:
        super().__init__(fd, STATS_SIZE, 0)
        self.side = side

    def counts(self) -> tuple[int, int]:
        """Events sent so far by that end, and by the other end."""
        sent = _WORDS.unpack_from(self._map)
        return sent[self.side], sent[1 - self.side]

    def waits(self) -> tuple[Wait | None, Wait | None]:
        """What side 0 (the server of a vchan) and side 1 are asleep in, if anything."""
        words = _WORDS.unpack_from(self._map)[statspage.FIRST_WAIT_WORD :]
        return statspage.decode(words[0]), statspage.decode(words[1])


View = TypeVar("View", bound=ReadOnlyMap)


def _view(reply: Reply, make: Callable[[int, int], View]) -> View:
    """Map the one descriptor of ``reply`` (closing it: the mapping keeps the object)."""
    try:
        return make(reply.fds[0], reply.values[0])
    finally:
        reply.close_fds()


def map_grant(conn: HubConnection, domid: int, ref: int) -> PageView:
    """Map grant ``ref`` of ``domid`` read-only (INSPECT); BackendError EINVAL if the
    domain has no such grant."""
    return _view(conn.call(Op.INSPECT, domid, ref), PageView)


def map_stats(conn: HubConnection, domid: int, port: int) -> StatsView:
    """Map the event statistics of the channel ``port`` of ``domid`` belongs to, read-only
    (EVT_STATS); BackendError EINVAL if there is no such port."""
    return _view(conn.call(Op.EVT_STATS, domid, port), StatsView)
