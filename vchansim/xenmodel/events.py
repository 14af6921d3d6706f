"""Xen's event channels: port numbers, their states, the limit, and the binding rules.

The table knows nothing of how an event reaches a waiter.  Each port carries the
*doorbell* its binder supplied (the hub's eventfd pair end, the memory backend's
handle); the table rings it where Xen itself makes a port pending -- a freshly bound
interdomain port -- and for :meth:`EventChannels.send`.  As on Xen, an end whose peer
went away returns to "unbound, waiting for that domain".
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from ..xen import RequestError

#: Ports a domain may have bound: 1..4095 (the 2-level event channel ABI's 4096 on 64-bit
#: guests, less port 0, which is never handed out).
PORTS_PER_DOMAIN = 4095
#: EVTCHNOP_status's port states: Xen's EVTCHNSTAT_closed, _unbound and _interdomain.
EVTCHNSTAT_CLOSED, EVTCHNSTAT_UNBOUND, EVTCHNSTAT_INTERDOMAIN = 0, 1, 2


class Doorbell(Protocol):
    """How an event reaches the process that bound a port."""

    def ring(self, port: int) -> None:
        """Make ``port`` (the one this doorbell belongs to) pending for its owner."""


B = TypeVar("B", bound=Doorbell)


@dataclass(eq=False)
class Port(Generic[B]):
    """One domain's end of an event channel."""

    domid: int
    number: int
    #: The domain allowed to bind (unbound) or bound to (interdomain).
    remote: int
    bell: B
    peer: Port[B] | None = field(default=None, repr=False)

    @property
    def state(self) -> str:
        """Xen's name for the port's state."""
        return "interdomain" if self.peer is not None else "unbound"


class EventChannels(Generic[B]):
    """Every domain's ports."""

    def __init__(self, limit: int = PORTS_PER_DOMAIN) -> None:
        self.limit = limit
        self._ports: dict[int, dict[int, Port[B]]] = {}

    def _free_number(self, domid: int) -> int:
        used = self._ports.get(domid, {})
        for number in range(1, self.limit + 1):
            if number not in used:
                return number
        raise RequestError(
            errno.ENOSPC,
            f"domain {domid} has no free event channel port: {len(used)} of {self.limit} bound",
        )

    def _add(self, port: Port[B]) -> Port[B]:
        self._ports.setdefault(port.domid, {})[port.number] = port
        return port

    def lookup(self, domid: int, number: int) -> Port[B]:
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
        allocated so far, which is not modelled.
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

    def bind_unbound(self, domid: int, remote: int, bell: B) -> Port[B]:
        """A new port of ``domid`` that ``remote`` may bind to."""
        return self._add(Port(domid, self._free_number(domid), remote, bell))

    def bind_interdomain(
        self, domid: int, remote: int, remote_port: int, bell: Callable[[Port[B]], B]
    ) -> Port[B]:
        """Connect a new port of ``domid`` to ``remote``'s unbound ``remote_port``.

        ``bell(other)`` makes the new end's doorbell once the bind is known to succeed.
        The new end starts pending, as Xen's ``evtchn_bind_interdomain()`` sets it:
        events rung into the unbound port were dropped, so the binder must look at the
        shared state once before it waits.
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
        port = Port(domid, self._free_number(domid), remote, bell(other))
        port.peer, other.peer = other, port
        self._add(port)
        port.bell.ring(port.number)
        return port

    def send(self, domid: int, number: int) -> None:
        """An event from port ``number`` of ``domid``: its peer's doorbell rings; an
        unbound port's event is dropped, as Xen drops it."""
        peer = self.lookup(domid, number).peer
        if peer is not None:
            peer.bell.ring(peer.number)

    def unbind(self, port: Port[B]) -> None:
        """Close ``port``; its peer, if any, goes back to waiting for ``port``'s domain."""
        del self._ports[port.domid][port.number]
        if not self._ports[port.domid]:
            del self._ports[port.domid]
        if port.peer is not None:
            port.peer.peer = None
            port.peer = None

    def domains(self) -> set[int]:
        """Domains that have at least one port."""
        return set(self._ports)

    def __iter__(self) -> Iterator[Port[B]]:
        """Every bound port, by domain and number."""
        for domid in sorted(self._ports):
            for _, port in sorted(self._ports[domid].items()):
                yield port
