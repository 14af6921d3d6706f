"""The ``memory`` backend: every domain inside one process, for fast tests.

A process-wide :class:`MemoryHypervisor` keeps the grant table and the event channels;
each :class:`MemoryBackend` is one domain's view of it.  Pages are anonymous mappings,
events wake threads through one ``eventfd`` per handle, and the store is the project's
XenStore model served in-process.  It follows the same Xen rules as the ``shm`` backend,
so two endpoints in two threads behave as they would in two domains -- except that a
thread cannot die the way a process can, so unmap-notify fires only on close.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import socket
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import BackendError, ConfigError, GrantError
from ..layout import PAGE_SIZE
from ..xen import check_domid
from ..xenstore.client import XsClient
from ..xenstore.store import Store as XsStore
from ..xenstore.store import XsConnection
from ..xenstore.wire import XsProtocolError
from .base import Backend, Events, UnmapNotify, with_unmap_notify

#: gntalloc's default limit on grants a domain may have outstanding.
GRANT_LIMIT = 1024


@dataclass
class _Grant:
    granter: int
    grantee: int
    writable: bool
    pages: mmap.mmap
    page: int


@dataclass
class _Port:
    domid: int
    number: int
    handle: MemoryEvents
    remote_domid: int
    remote_port: int = 0  # 0 while unbound


@dataclass
class MemoryHypervisor:
    """Grant table and event channels shared by every MemoryBackend of a process."""

    grant_limit: int = GRANT_LIMIT
    lock: threading.RLock = field(default_factory=threading.RLock)
    grants: dict[tuple[int, int], _Grant] = field(default_factory=dict)
    ports: dict[tuple[int, int], _Port] = field(default_factory=dict)
    xenstore: XsStore = field(default_factory=XsStore)

    # -- grants -----------------------------------------------------------------------
    def grant(
        self, granter: int, grantee: int, pages: mmap.mmap, count: int, writable: bool
    ) -> list[int]:
        with self.lock:
            used = sum(1 for dom, _ in self.grants if dom == granter)
            if used + count > self.grant_limit:
                raise GrantError(
                    f"domain {granter} cannot grant {count} more pages: {used} of its "
                    f"{self.grant_limit} grants are in use (ENOSPC)",
                    err=errno.ENOSPC,
                )
            refs = []
            ref = 1
            for page in range(count):
                while (granter, ref) in self.grants:
                    ref += 1
                self.grants[(granter, ref)] = _Grant(granter, grantee, writable, pages, page)
                refs.append(ref)
            return refs

    def revoke(self, granter: int, refs: Sequence[int]) -> None:
        with self.lock:
            for ref in refs:
                self.grants.pop((granter, ref), None)

    def lookup(self, mapper: int, granter: int, refs: Sequence[int], writable: bool) -> memoryview:
        """Check Xen's rules for every ref and return the pages as one buffer."""
        with self.lock:
            found = [self._check(mapper, granter, ref, writable) for ref in refs]
        first = found[0]
        contiguous = all(
            g.pages is first.pages and g.page == first.page + i for i, g in enumerate(found)
        )
        if not contiguous:
            raise GrantError(
                f"the memory backend maps only consecutive pages of one share; refs {list(refs)}"
                " of domain {granter} are not (use the shm backend)",
                err=errno.EINVAL,
            )
        view = memoryview(first.pages)[
            first.page * PAGE_SIZE : (first.page + len(found)) * PAGE_SIZE
        ]
        return view if writable else view.toreadonly()

    def _check(self, mapper: int, granter: int, ref: int, writable: bool) -> _Grant:
        grant = self.grants.get((granter, ref))
        if grant is None:
            raise GrantError(
                f"domain {granter} has no grant {ref} (unknown or revoked)", err=errno.EINVAL
            )
        if grant.grantee != mapper:
            raise GrantError(
                f"grant {ref} of domain {granter} is for domain {grant.grantee}, "
                f"not domain {mapper}",
                err=errno.EPERM,
            )
        if writable and not grant.writable:
            raise GrantError(
                f"grant {ref} of domain {granter} is read-only; cannot map it writable",
                err=errno.EACCES,
            )
        return grant

    # -- events -----------------------------------------------------------------------
    def new_port(self, domid: int, handle: MemoryEvents, remote: int) -> _Port:
        with self.lock:
            number = 1
            while (domid, number) in self.ports:
                number += 1
            port = _Port(domid, number, handle, remote)
            self.ports[(domid, number)] = port
            return port

    def connect(self, domid: int, handle: MemoryEvents, remote: int, remote_port: int) -> _Port:
        with self.lock:
            other = self.ports.get((remote, remote_port))
            if other is None or other.remote_domid != domid or other.remote_port:
                raise BackendError(
                    f"domain {remote} has no unbound port {remote_port} offered to domain {domid}",
                    err=errno.EINVAL,
                )
            port = self.new_port(domid, handle, remote)
            port.remote_port = remote_port
            other.remote_port = port.number
            return port

    def send(self, domid: int, number: int) -> None:
        with self.lock:
            port = self.ports.get((domid, number))
            if port is None:
                raise BackendError(
                    f"port {number} is not bound in domain {domid}", err=errno.ENOTCONN
                )
            peer = (
                self.ports.get((port.remote_domid, port.remote_port)) if port.remote_port else None
            )
        if peer is not None:
            peer.handle.fire(peer.number)

    def close_port(self, domid: int, number: int) -> None:
        with self.lock:
            port = self.ports.pop((domid, number), None)
            if port is None or not port.remote_port:
                return
            peer = self.ports.get((port.remote_domid, port.remote_port))
            if peer is not None:
                peer.remote_port = 0  # back to "unbound, waiting for that domain"


_DEFAULT = MemoryHypervisor()


class MemoryMapping:
    """Pages shared or mapped through the memory hypervisor."""

    def __init__(self, buf: memoryview, refs: Sequence[int], on_close: list) -> None:
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
        if not 1 <= count <= 256:
            raise ConfigError(f"cannot share {count} pages at once (1..256)")
        pages = mmap.mmap(-1, count * PAGE_SIZE)
        refs = self._hv.grant(self._domid, peer, pages, count, writable)
        mapping = MemoryMapping(
            memoryview(pages), refs, [lambda: self._hv.revoke(self._domid, refs)]
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

    def set_unmap_notify(self, mapping: MemoryMapping, offset: int, port: int) -> None:
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
    """An event-channel handle: ports queue on fire, masked until unmasked, one eventfd."""

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
            entry = hv.ports.get((domid, port))
        if entry is None:
            raise GrantError(f"port {port} is not bound in domain {domid}", err=errno.EINVAL)
        return entry.handle

    def bind_unbound(self, remote: int) -> int:
        check_domid(remote, "remote domain id")
        port = self._hv.new_port(self._domid, self, remote).number
        self._ports.add(port)
        return port

    def bind_interdomain(self, remote: int, remote_port: int) -> int:
        """Connect to ``remote``'s unbound port.  The new port starts pending, as Xen's
        ``evtchn_bind_interdomain()`` sets it: events sent to the unbound end were dropped,
        so the binder must look at the shared state once before it waits."""
        check_domid(remote, "remote domain id")
        port = self._hv.connect(self._domid, self, remote, remote_port).number
        self._ports.add(port)
        self.fire(port)
        return port

    def notify(self, port: int) -> None:
        if port not in self._ports:
            raise BackendError(f"port {port} is not bound on this handle", err=errno.ENOTCONN)
        self._hv.send(self._domid, port)

    def fire(self, port: int) -> None:
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
            self.fire(port)

    def unbind(self, port: int) -> None:
        if port not in self._ports:
            raise BackendError(f"port {port} is not bound on this handle", err=errno.ENOTCONN)
        self._ports.discard(port)
        self._hv.close_port(self._domid, port)

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
    with hv.lock:
        conn = XsConnection(hv.xenstore, domid, far.sendall)

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
