"""The hub's event-channel model: ports, their eventfd pairs, and Xen's binding rules.

A port is one end of a doorbell.  Its *incoming* eventfd is what the owning process
polls; its *outgoing* one is the other end's incoming, so a notify is a plain eventfd
write from process to process and the hub never sits on the data path.  The hub only
creates pairs, hands them out, and tracks which end is bound where -- so that, as on Xen,
an end whose peer went away returns to "unbound, waiting for that domain" and the next
bind by that domain gets the very same pair (a persistent server survives a client
reconnecting).
"""

from __future__ import annotations

import errno
import mmap
import os
from dataclasses import dataclass, field

from ..atomics import AtomicCounters
from .protocol import (
    EVTCHNSTAT_CLOSED,
    EVTCHNSTAT_INTERDOMAIN,
    EVTCHNSTAT_UNBOUND,
    RequestError,
)

#: Ports a domain may have bound: 1..4095 (the 2-level event channel ABI's 4096 on 64-bit
#: guests, less port 0, which is never handed out).
PORTS_PER_DOMAIN = 4095


#: Size of a channel's statistics page: u64 events sent by side 0, then by side 1.
STATS_SIZE = 4096


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
class Port:
    """One domain's end of an event channel, bound through connection ``owner``."""

    domid: int
    number: int
    #: The domain allowed to bind (unbound) or bound to (interdomain).
    remote: int
    pair: EventPair
    side: int
    owner: int
    peer: Port | None = field(default=None, repr=False)

    @property
    def incoming(self) -> int:
        """The eventfd this end polls."""
        return self.pair.fds[self.side]

    @property
    def outgoing(self) -> int:
        """The eventfd this end rings (the peer's incoming)."""
        return self.pair.fds[1 - self.side]

    @property
    def state(self) -> str:
        """Xen's name for the port's state."""
        return "interdomain" if self.peer is not None else "unbound"

    def describe(self) -> dict[str, object]:
        """The port as the STATE reply shows it."""
        return {
            "domid": self.domid,
            "port": self.number,
            "remote": self.remote,
            "state": self.state,
            "remote_port": self.peer.number if self.peer is not None else None,
            "conn": self.owner,
            "events_sent": self.pair.sent()[self.side],
        }


class Doorbell:
    """A port's outgoing eventfd, pinned so it can still ring after the port is unbound.

    Unmap-notify resolves its port when it is registered (the kernel holds a reference
    the same way), so a process whose event handle closed before its mapping still wakes
    its peer when it dies.
    """

    def __init__(self, port: Port) -> None:
        self._pair = port.pair.acquire()
        self._index = 1 - port.side
        self.port = port.number

    def ring(self) -> None:
        """Send the event."""
        self._pair.ring(self._index)

    def release(self) -> None:
        """Drop the pin."""
        self._pair.release()


class PortTable:
    """Every domain's ports."""

    def __init__(self, limit: int = PORTS_PER_DOMAIN) -> None:
        self.limit = limit
        self._ports: dict[int, dict[int, Port]] = {}

    def _free_number(self, domid: int) -> int:
        used = self._ports.get(domid, {})
        for number in range(1, self.limit + 1):
            if number not in used:
                return number
        raise RequestError(
            errno.ENOSPC,
            f"domain {domid} has no free event channel port: {len(used)} of {self.limit} bound",
        )

    def _add(self, port: Port) -> Port:
        self._ports.setdefault(port.domid, {})[port.number] = port
        return port

    def lookup(self, domid: int, number: int) -> Port:
        """The bound port ``number`` of ``domid``; EINVAL if there is none."""
        port = self._ports.get(domid, {}).get(number)
        if port is None:
            raise RequestError(errno.EINVAL, f"domain {domid} has no port {number}")
        return port

    def status(self, domid: int, number: int) -> tuple[int, int, int]:
        """EVTCHNOP_status of port ``number`` of an existing ``domid``: (state, remote
        domain, remote port), the remote port 0 unless interdomain.

        Ports 0 .. limit are valid, closed when not bound (port 0 is Xen's reserved one,
        closed too); a higher number is EINVAL.  Xen's own bound is the event buckets
        allocated so far, which the hub does not model.
        """
        if not 0 <= number <= self.limit:
            raise RequestError(
                errno.EINVAL, f"port {number} is not valid in domain {domid} (0..{self.limit})"
            )
        port = self._ports.get(domid, {}).get(number)
        if port is None:
            return EVTCHNSTAT_CLOSED, 0, 0
        if port.peer is None:
            return EVTCHNSTAT_UNBOUND, port.remote, 0
        return EVTCHNSTAT_INTERDOMAIN, port.remote, port.peer.number

    def bind_unbound(self, domid: int, remote: int, owner: int) -> Port:
        """A new port of ``domid`` that ``remote`` may bind to, with a fresh eventfd pair."""
        number = self._free_number(domid)
        return self._add(Port(domid, number, remote, EventPair(), side=0, owner=owner))

    def bind_interdomain(self, domid: int, remote: int, remote_port: int, owner: int) -> Port:
        """Connect a new port of ``domid`` to ``remote``'s unbound ``remote_port``.

        The new end gets the waiting end's pair swapped and starts pending, as Xen's
        ``evtchn_bind_interdomain()`` sets the new local port pending: events rung into
        the unbound port were dropped, so the binder must look at the shared state once
        before it waits.
        """
        other = self._ports.get(remote, {}).get(remote_port)
        if other is None:
            raise RequestError(errno.EINVAL, f"domain {remote} has no port {remote_port}")
        if other.peer is not None:
            raise RequestError(
                errno.EINVAL,
                f"port {remote_port} of domain {remote} is already bound to domain "
                f"{other.remote} port {other.peer.number}",
            )
        if other.remote != domid:
            raise RequestError(
                errno.EINVAL,
                f"port {remote_port} of domain {remote} waits for domain {other.remote}, "
                f"not {domid}",
            )
        number = self._free_number(domid)
        port = Port(domid, number, remote, other.pair.acquire(), side=1 - other.side, owner=owner)
        port.pair.set_pending(port.side)
        port.peer, other.peer = other, port
        return self._add(port)

    def unbind(self, port: Port) -> None:
        """Close ``port``; its peer, if any, goes back to waiting for ``port``'s domain."""
        del self._ports[port.domid][port.number]
        if not self._ports[port.domid]:
            del self._ports[port.domid]
        if port.peer is not None:
            port.peer.peer = None
            port.peer = None
        port.pair.release()

    def domains(self) -> set[int]:
        """Domains that have at least one port."""
        return set(self._ports)

    def snapshot(self) -> list[dict[str, object]]:
        """Every port, for STATE."""
        return [
            port.describe()
            for domid in sorted(self._ports)
            for _, port in sorted(self._ports[domid].items())
        ]
