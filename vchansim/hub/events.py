"""The hub's event channels: Xen's port rules (:mod:`vchansim.xenmodel.events`) over
eventfd pairs.

A port is one end of a doorbell.  Its *incoming* eventfd is what the owning process
polls; its *outgoing* one is the other end's incoming, so a notify is a plain eventfd
write from process to process and the hub never sits on the data path.  The hub only
creates pairs, hands them out, and tracks which end is bound where -- so that, as on Xen,
an end whose peer went away returns to "unbound, waiting for that domain" and the next
bind by that domain gets the very same pair (a persistent server survives a client
reconnecting).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

from ..atomics import AtomicCounters
from ..statspage import STATS_SIZE
from ..xenmodel.events import PORTS_PER_DOMAIN, EventChannels
from ..xenmodel.events import Port as ModelPort


class EventPair:
    """Two eventfds and a statistics page, held by the hub for as long as a port or an
    unmap-notify needs them.

    End ``side`` polls ``fds[side]``, rings ``fds[1 - side]`` and counts each event it
    sends in u64 ``side`` of the statistics page (a memfd both ends map), so observers see
    the traffic of both directions without being on its path.
    """

    def __init__(self) -> None:
        flags = os.EFD_CLOEXEC | os.EFD_NONBLOCK
        opened: list[int] = []
        try:
            for _ in range(2):
                opened.append(os.eventfd(0, flags))
            stats = os.memfd_create("vchansim-evtchn-stats", os.MFD_CLOEXEC)
            opened.append(stats)
            os.ftruncate(stats, STATS_SIZE)
        except OSError:
            for fd in opened:
                os.close(fd)
            raise
        self.fds = (opened[0], opened[1])
        self.stats_fd = stats
        # What only observers and the hub's own events need is made on first use, so
        # that binding a port -- on every channel's setup path -- does not pay for it.
        self._stats_ro_fd: int | None = None
        self._stats: tuple[mmap.mmap, memoryview, AtomicCounters] | None = None
        self._refs = 1

    @property
    def stats_ro_fd(self) -> int:
        """A descriptor of the statistics page for observers, which cannot write: the
        page reopened read-only through /proc."""
        if self._stats_ro_fd is None:
            self._stats_ro_fd = os.open(
                f"/proc/self/fd/{self.stats_fd}", os.O_RDONLY | os.O_CLOEXEC
            )
        return self._stats_ro_fd

    @property
    def counters(self) -> AtomicCounters:
        """The hub's own mapping of the statistics page."""
        if self._stats is None:
            page = mmap.mmap(self.stats_fd, STATS_SIZE)
            view = memoryview(page)
            self._stats = (page, view, AtomicCounters(view, 2))
        return self._stats[2]

    def acquire(self) -> EventPair:
        """Take another reference (a second port, or an unmap-notify)."""
        self._refs += 1
        return self

    def release(self) -> None:
        """Drop a reference; the eventfds close with the last one."""
        self._refs -= 1
        if self._refs:
            return
        if self._stats is not None:
            page, view, counters = self._stats
            counters.release()
            view.release()
            page.close()
        for fd in (*self.fds, self.stats_fd, self._stats_ro_fd):
            if fd is not None:
                os.close(fd)

    def ring(self, fd_index: int) -> None:
        """Send one event into ``fds[fd_index]`` on behalf of the other side, counted."""
        self.counters.add(1 - fd_index)
        os.eventfd_write(self.fds[fd_index], 1)

    def sent(self) -> tuple[int, int]:
        """Events sent so far by side 0 and by side 1."""
        return self.counters[0], self.counters[1]

    def set_pending(self, fd_index: int) -> None:
        """Make ``fds[fd_index]`` pending, on the hypervisor's behalf: not counted as an
        event either side sent, and harmless when it already is (an eventfd counter that
        is non-zero stays so)."""
        os.eventfd_write(self.fds[fd_index], 1)


@dataclass(eq=False)
class PairEnd:
    """A port's doorbell in the hub: end ``side`` of an eventfd pair, bound through
    connection ``owner``."""

    pair: EventPair
    side: int
    owner: int

    @property
    def incoming(self) -> int:
        """The eventfd this end polls."""
        return self.pair.fds[self.side]

    @property
    def outgoing(self) -> int:
        """The eventfd this end rings (the peer's incoming)."""
        return self.pair.fds[1 - self.side]

    def ring(self, port: int) -> None:
        """Make the port pending on the hypervisor's behalf (not an event either side sent)."""
        self.pair.set_pending(self.side)


#: A bound port of the hub.
Port = ModelPort[PairEnd]


def describe(port: Port) -> dict[str, object]:
    """The port as the STATE reply shows it."""
    return {
        "domid": port.domid,
        "port": port.number,
        "remote": port.remote,
        "state": port.state,
        "remote_port": port.peer.number if port.peer is not None else None,
        "conn": port.bell.owner,
        "events_sent": port.bell.pair.sent()[port.bell.side],
    }


class PinnedBell:
    """A port's outgoing eventfd, pinned so it can still ring after the port is unbound.

    Unmap-notify resolves its port when it is registered (the kernel holds a reference
    the same way), so a process whose event handle closed before its mapping still wakes
    its peer when it dies.
    """

    def __init__(self, port: Port) -> None:
        self._pair = port.bell.pair.acquire()
        self._index = 1 - port.bell.side
        self.port = port.number

    def ring(self) -> None:
        """Send the event."""
        self._pair.ring(self._index)

    def release(self) -> None:
        """Drop the pin."""
        self._pair.release()


class PortTable:
    """Every domain's ports, each end holding a reference to its eventfd pair."""

    def __init__(self, limit: int = PORTS_PER_DOMAIN) -> None:
        self.channels: EventChannels[PairEnd] = EventChannels(limit)

    def lookup(self, domid: int, number: int) -> Port:
        """The bound port ``number`` of ``domid``; EINVAL if there is none."""
        return self.channels.lookup(domid, number)

    def status(self, domid: int, number: int) -> tuple[int, int, int]:
        """EVTCHNOP_status of port ``number`` of an existing ``domid`` (the model's)."""
        return self.channels.status(domid, number)

    def bind_unbound(self, domid: int, remote: int, owner: int) -> Port:
        """A new port of ``domid`` that ``remote`` may bind to, with a fresh eventfd pair."""
        pair = EventPair()
        try:
            return self.channels.bind_unbound(domid, remote, PairEnd(pair, 0, owner))
        except BaseException:
            pair.release()
            raise

    def bind_interdomain(self, domid: int, remote: int, remote_port: int, owner: int) -> Port:
        """Connect a new port of ``domid`` to ``remote``'s unbound ``remote_port``: the
        new end takes the other side of the waiting end's pair (and starts pending)."""

        def other_side(waiting: Port) -> PairEnd:
            return PairEnd(waiting.bell.pair.acquire(), 1 - waiting.bell.side, owner)

        return self.channels.bind_interdomain(domid, remote, remote_port, other_side)

    def unbind(self, port: Port) -> None:
        """Close ``port`` and drop its reference to the pair."""
        self.channels.unbind(port)
        port.bell.pair.release()

    def domains(self) -> set[int]:
        """Domains that have at least one port."""
        return self.channels.domains()

    def snapshot(self) -> list[dict[str, object]]:
        """Every port, for STATE."""
        return [describe(port) for port in self.channels]
