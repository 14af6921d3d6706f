"""The ``memory`` backend: every domain inside one process, for fast tests.

A process-wide :class:`MemoryHypervisor` keeps the grant table and the event channels;
each :class:`MemoryBackend` is one domain's view of it.  Pages are anonymous mappings,
events wake threads through one ``eventfd`` per handle, and the store is the project's
XenStore model served in-process.  It follows the same Xen rules as the ``shm`` backend,
so two endpoints in two threads behave as they would in two domains -- except that a
thread cannot die the way a process can, so unmap-notify fires only on close.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import select
import socket
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import BackendError, ConfigError, GrantError
from ..layout import PAGE_SIZE
from ..xen import MAX_GRANT_PAGES, RequestError, check_domid
from ..xenmodel.events import PORTS_PER_DOMAIN, EventChannels
from ..xenmodel.grants import GRANTS_PER_DOMAIN, GrantTable
from ..xenstore.client import XsClient
from ..xenstore.store import Xenstored, XsConnection
from ..xenstore.wire import XsProtocolError
from .base import Backend, Events, Mapping, UnmapNotify, with_unmap_notify


def _anonymous_pages(count: int) -> mmap.mmap:
    """The memory backend's page allocator: ``count`` zeroed pages of this process."""
    return mmap.mmap(-1, count * PAGE_SIZE)


def _refused(exc: RequestError, error: type[BackendError] = BackendError) -> BackendError:
    """Xen's refusal as the backend's exception, with its errno."""
    return error(exc.message, err=exc.err)


@dataclass
class MemoryHypervisor:
    """Xen's grant table and event channels (:mod:`vchansim.xenmodel`), shared by every
    MemoryBackend of a process: pages are anonymous mappings, a port's doorbell is the
    event handle that bound it."""

    grant_limit: int = GRANTS_PER_DOMAIN
    port_limit: int = PORTS_PER_DOMAIN
    lock: threading.RLock = field(default_factory=threading.RLock)
    xenstore: Xenstored = field(default_factory=Xenstored)
    grants: GrantTable[mmap.mmap] = field(init=False)
    ports: EventChannels[MemoryEvents] = field(init=False)

    def __post_init__(self) -> None:
        self.grants = GrantTable(_anonymous_pages, self.grant_limit)
        self.ports = EventChannels(self.port_limit)

    def lookup(self, mapper: int, granter: int, refs: Sequence[int], writable: bool) -> memoryview:
        """Check Xen's rules for every ref and return the pages as one buffer."""
        with self.lock:
            try:
                found = self.grants.map(mapper, granter, refs, writable)
            except RequestError as exc:
                raise _refused(exc, GrantError) from None
        first = found[0]
        contiguous = all(
            g.pages is first.pages and g.page == first.page + i for i, g in enumerate(found)
        )
        if not contiguous:
            raise GrantError(
                f"the memory backend maps only consecutive pages of one share; refs {list(refs)}"
                f" of domain {granter} are not (use the shm backend)",
                err=errno.EINVAL,
            )
        view = memoryview(first.pages)[
            first.page * PAGE_SIZE : (first.page + len(found)) * PAGE_SIZE
        ]
        return view if writable else view.toreadonly()


_DEFAULT = MemoryHypervisor()


class MemoryMapping:
    """Pages shared or mapped through the memory hypervisor."""

    def __init__(
        self, buf: memoryview, refs: Sequence[int], on_close: list[Callable[[], object]]
    ) -> None:
        self.buf = buf
        self.refs = tuple(refs)
        self._on_close = on_close
        self._notify: tuple[int, MemoryEvents, int] | None = None

    def close(self) -> None:
        if self._notify is not None and not self.buf.readonly:
            offset, events, port = self._notify
            self.buf[offset] = 0
            events.notify(port)
        self._notify = None
        for action in self._on_close:
            action()
        self._on_close = []
        self.buf.release()


class MemoryGrants:
    def __init__(self, hv: MemoryHypervisor, domid: int) -> None:
        self._hv = hv
        self._domid = domid
        self._open: list[MemoryMapping] = []

    def share(
        self, peer: int, count: int, *, writable: bool = True, notify: UnmapNotify | None = None
    ) -> MemoryMapping:
        check_domid(peer, "peer domain id")
        if not 1 <= count <= MAX_GRANT_PAGES:
            raise ConfigError(f"cannot share {count} pages at once (1..{MAX_GRANT_PAGES})")
        with self._hv.lock:
            try:
                grants = self._hv.grants.share(self._domid, peer, count, writable)
            except RequestError as exc:
                raise _refused(exc, GrantError) from None

        def revoke() -> None:
            with self._hv.lock:
                self._hv.grants.revoke(grants)

        mapping = MemoryMapping(
            memoryview(grants[0].pages), [grant.ref for grant in grants], [revoke]
        )
        self._open.append(mapping)
        return with_unmap_notify(self, mapping, notify)

    def map(
        self,
        peer: int,
        refs: Sequence[int],
        *,
        writable: bool = True,
        notify: UnmapNotify | None = None,
    ) -> MemoryMapping:
        if not refs:
            raise ConfigError("map needs at least one grant reference")
        buf = self._hv.lookup(self._domid, peer, refs, writable)
        mapping = MemoryMapping(buf, refs, [])
        self._open.append(mapping)
        return with_unmap_notify(self, mapping, notify)

    def set_unmap_notify(self, mapping: Mapping, offset: int, port: int) -> None:
        if not isinstance(mapping, MemoryMapping):
            raise GrantError(f"{mapping!r} was not made by the memory backend", err=errno.EINVAL)
        if mapping.buf.readonly:
            raise GrantError(
                "unmap-notify cannot clear a byte of a read-only mapping", err=errno.EINVAL
            )
        if not 0 <= offset < mapping.buf.nbytes:
            raise GrantError(
                f"unmap-notify offset {offset} is outside the mapping", err=errno.EINVAL
            )
        events = MemoryEvents.owner_of(self._hv, self._domid, port)
        mapping._notify = (offset, events, port)

    def close(self) -> None:
        for mapping in self._open:
            mapping.close()
        self._open.clear()


class MemoryEvents(Events):
    """An event-channel handle: ports queue when rung, masked until unmasked, one eventfd.
    It is the doorbell of every port it binds."""

    def __init__(self, hv: MemoryHypervisor, domid: int) -> None:
        self._hv = hv
        self._domid = domid
        self._fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._lock = threading.Lock()
        self._ready: deque[int] = deque()
        self._masked: set[int] = set()
        self._latched: set[int] = set()
        self._ports: set[int] = set()

    @staticmethod
    def owner_of(hv: MemoryHypervisor, domid: int, port: int) -> MemoryEvents:
        with hv.lock:
            try:
                return hv.ports.lookup(domid, port).bell
            except RequestError:
                raise GrantError(
                    f"port {port} is not bound in domain {domid}", err=errno.EINVAL
                ) from None

    def bind_unbound(self, remote: int) -> int:
        check_domid(remote, "remote domain id")
        with self._hv.lock:
            try:
                port = self._hv.ports.bind_unbound(self._domid, remote, self).number
            except RequestError as exc:
                raise _refused(exc) from None
        self._ports.add(port)
        return port

    def bind_interdomain(self, remote: int, remote_port: int) -> int:
        """Connect to ``remote``'s unbound port.  The new port starts pending, as Xen's
        ``evtchn_bind_interdomain()`` sets it: events sent to the unbound end were dropped,
        so the binder must look at the shared state once before it waits."""
        check_domid(remote, "remote domain id")
        with self._hv.lock:
            try:
                port = self._hv.ports.bind_interdomain(
                    self._domid, remote, remote_port, lambda waiting: self
                ).number
            except RequestError as exc:
                raise _refused(exc) from None
        self._ports.add(port)
        return port

    def notify(self, port: int) -> None:
        if port not in self._ports:
            raise BackendError(f"port {port} is not bound on this handle", err=errno.ENOTCONN)
        with self._hv.lock:
            self._hv.ports.send(self._domid, port)

    def ring(self, port: int) -> None:
        """Deliver an event: queue the port and mask it, or latch it if already masked."""
        with self._lock:
            if self._fd < 0:
                return  # the handle closed meanwhile: the event is dropped, as on Xen
            if port in self._masked:
                self._latched.add(port)
                return
            self._masked.add(port)
            self._ready.append(port)
            os.eventfd_write(self._fd, 1)  # under the lock: readable exactly while queued

    def pending(self, timeout: float | None = None) -> int | None:
        ms = -1 if timeout is None else max(0, int(timeout * 1000))
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        if not poller.poll(ms):
            return None
        with self._lock:
            port = self._ready.popleft()
            if not self._ready:
                os.eventfd_read(self._fd)
            return port

    def unmask(self, port: int) -> None:
        with self._lock:
            self._masked.discard(port)
            again = port in self._latched
            self._latched.discard(port)
        if again:
            self.ring(port)

    def unbind(self, port: int) -> None:
        if port not in self._ports:
            raise BackendError(f"port {port} is not bound on this handle", err=errno.ENOTCONN)
        self._ports.discard(port)
        with self._hv.lock:
            self._hv.ports.unbind(self._hv.ports.lookup(self._domid, port))

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        for port in list(self._ports):
            self.unbind(port)
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _serve_store(hv: MemoryHypervisor, domid: int) -> XsClient:
    """A XenStore connection to the in-process store, over a real socket pair.

    A small thread feeds the far end into the store model, so the client is the same
    wire-protocol client the other backends use.
    """
    near, far = socket.socketpair()

    def send(data: bytes) -> None:
        # Another client's request may fire our watch after our client went away and
        # before this pump saw it: the event is lost with the client, as in xenstored,
        # and must not fail that other request.
        with contextlib.suppress(OSError):
            far.sendall(data)

    with hv.lock:
        conn = XsConnection(hv.xenstore, domid, send)

    def pump() -> None:
        try:
            while data := far.recv(65536):
                with hv.lock:
                    conn.receive(data)
        except (OSError, XsProtocolError):
            pass  # the client went away or broke the framing: drop it, as xenstored does
        finally:
            with hv.lock:
                conn.close()
            far.close()

    threading.Thread(target=pump, name=f"memory-xenstore-dom{domid}", daemon=True).start()
    return XsClient(near)


class MemoryBackend(Backend):
    """One domain on the in-process hypervisor (threads as domains)."""

    name = "memory"

    def __init__(
        self, domid: int | None = None, *, hypervisor: MemoryHypervisor | None = None
    ) -> None:
        super().__init__(domid)
        self.hypervisor = hypervisor or _DEFAULT
        with self.hypervisor.lock:
            self.hypervisor.xenstore.ensure_domain(self.domid)

    def grants(self) -> MemoryGrants:
        return MemoryGrants(self.hypervisor, self.domid)

    def events(self) -> MemoryEvents:
        return MemoryEvents(self.hypervisor, self.domid)

    def store(self) -> XsClient:
        return _serve_store(self.hypervisor, self.domid)
