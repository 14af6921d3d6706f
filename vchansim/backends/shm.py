"""The ``shm`` backend: Xen's services emulated for unrelated local processes.

The hub (:mod:`vchansim.hub`) plays hypervisor, kernel drivers and xenstored; this module
is the endpoint's side of it.  Each handle is its own hub connection, so closing it -- or
the process dying -- releases exactly what it held, as closing ``/dev/xen/gntalloc`` or
``evtchn`` does.  Once set up, nothing here talks to the hub on the data path: mappings
are ``mmap``\\ s of shm descriptors the hub handed over, and ``notify`` writes the peer's
eventfd directly.  Established rings therefore survive the hub dying.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import select
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import statspage
from ..atomics import AtomicCounters
from ..core import buffer_address, eventfd_kick, map_fixed, wait_one
from ..errors import BackendError, ConfigError, GrantError
from ..hub.launcher import open_hub
from ..hub.protocol import (
    GNT_NOTIFY,
    GNT_WRITABLE,
    HubConnection,
    HubGoneError,
    Op,
)
from ..layout import PAGE_SIZE
from ..rundir import RUNDIR_ENV, RunDir, prepare_rundir
from ..statspage import STATS_SIZE, Blocked
from ..xen import MAX_GRANT_PAGES, check_domid
from ..xenstore.client import XsClient
from .base import Backend, DirectWait, Events, Mapping, UnmapNotify

STRICT_ENV = "VCHANSIM_STRICT"

#: Descriptors held by this process's shm event handles (fd -> what), for leak checks.
_held: dict[int, str] = {}
_held_lock = threading.Lock()


def held_descriptors() -> dict[int, str]:
    """Eventfds and epoll descriptors that open shm event handles of this process hold."""
    with _held_lock:
        return dict(_held)


def _hold(fd: int, what: str) -> None:
    with _held_lock:
        _held[fd] = what


def _unhold(fd: int) -> None:
    with _held_lock:
        _held.pop(fd, None)


def _close_held(fd: int) -> None:
    _unhold(fd)
    os.close(fd)


# -- mapping pages ---------------------------------------------------------------------


def _runs(layout: Sequence[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Group ``(fd index, page)`` per buffer page into ``(fd index, first page, count)``
    runs of consecutive pages of one object -- each run is one mmap call."""
    runs: list[tuple[int, int, int]] = []
    for fd_index, page in layout:
        if runs and runs[-1][0] == fd_index and runs[-1][1] + runs[-1][2] == page:
            index, first, count = runs[-1]
            runs[-1] = (index, first, count + 1)
        else:
            runs.append((fd_index, page, 1))
    return runs


def _map_fixed(address: int, fd: int, first: int, count: int, prot: int) -> None:
    try:
        map_fixed(address, count * PAGE_SIZE, prot, fd, first * PAGE_SIZE)
    except OSError as exc:
        raise GrantError(f"mapping granted pages failed: {exc.strerror}", err=exc.errno) from None


def map_pages(fds: Sequence[int], layout: Sequence[tuple[int, int]], writable: bool) -> mmap.mmap:
    """Map pages of shm objects as one contiguous buffer, as gntdev would.

    One run (consecutive pages of one object) is a single ``mmap``.  Otherwise a range is
    reserved with an anonymous mapping owned by a Python ``mmap`` object -- so closing it
    is one ``munmap``, refused while views are exported -- and each run is placed over it
    with ``MAP_FIXED``.  Read-only maps use ``PROT_READ`` over read-only descriptors: the
    kernel refuses writes, not just the memoryview.
    """
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    runs = _runs(layout)
    if len(runs) == 1:
        index, first, count = runs[0]
        size, offset = count * PAGE_SIZE, first * PAGE_SIZE
        return mmap.mmap(fds[index], size, flags=mmap.MAP_SHARED, prot=prot, offset=offset)
    region = mmap.mmap(-1, len(layout) * PAGE_SIZE, flags=mmap.MAP_PRIVATE)
    try:
        base = buffer_address(region)
        offset = 0
        for index, first, count in runs:
            _map_fixed(base + offset * PAGE_SIZE, fds[index], first, count, prot)
            offset += count
    except BaseException:
        region.close()
        raise
    return region


class ShmMapping:
    """Pages shared or mapped through the hub, seen as one buffer (see base.Mapping)."""

    def __init__(
        self, owner: ShmGrants, handle: int, refs: Sequence[int], region: mmap.mmap, writable: bool
    ) -> None:
        self._owner = owner
        self._region = region
        self.handle = handle
        self.refs = tuple(refs)
        self.writable = writable
        self.buf = self._view()
        self.closed = False

    def _view(self) -> memoryview:
        view = memoryview(self._region)
        if self.writable:
            return view
        readonly = view.toreadonly()
        view.release()
        return readonly

    def close(self) -> None:
        """Unmap, then tell the hub (which fires the unmap-notify).  Idempotent.

        Refuses, changing nothing, while slices of :attr:`buf` are still alive: unmapping
        under them would crash the process on their next use.
        """
        if self.closed:
            return
        self.buf.release()
        try:
            self._region.close()
        except BufferError:
            self.buf = self._view()
            raise BackendError(
                f"mapping of refs {list(self.refs)} is still in use: release the "
                "memoryviews taken from its buf before closing it",
                err=errno.EBUSY,
            ) from None
        self.closed = True
        self._owner._unmapped(self)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self.refs)} page(s)"
        return f"<ShmMapping handle={self.handle} refs={list(self.refs)} {state}>"


class ShmGrants:
    """A grant-table handle: one hub connection (like one gntalloc/gntdev file)."""

    def __init__(self, conn: HubConnection) -> None:
        self._conn = conn
        self._mappings: dict[int, ShmMapping] = {}

    def _call(self, op: Op, *args: int) -> tuple[int, ...]:
        return self._conn.call(op, *args, error=GrantError).values

    def _adopt(
        self,
        handle: int,
        fds: list[int],
        refs: Sequence[int],
        layout: Sequence[tuple[int, int]],
        writable: bool,
    ) -> ShmMapping:
        """Map what the hub returned; on failure give the handle back to the hub."""
        try:
            region = map_pages(fds, layout, writable)
        except BaseException:
            self._release_handle(handle)
            raise
        finally:
            for fd in fds:
                os.close(fd)
        mapping = ShmMapping(self, handle, refs, region, writable)
        self._mappings[handle] = mapping
        return mapping

    def share(
        self, peer: int, count: int, *, writable: bool = True, notify: UnmapNotify | None = None
    ) -> ShmMapping:
        """Allocate ``count`` zeroed pages and grant them to domain ``peer``; ``notify``
        goes in the same hub request."""
        check_domid(peer, "peer domain id")
        _check_count(count)
        flags, extra = _notify_args(GNT_WRITABLE if writable else 0, notify)
        reply = self._conn.call(Op.GNT_SHARE, peer, count, flags, *extra, error=GrantError)
        refs = reply.values[2:]
        layout = [(0, page) for page in range(count)]
        return self._adopt(reply.values[0], reply.fds, refs, layout, writable=True)

    def map(
        self,
        peer: int,
        refs: Sequence[int],
        *,
        writable: bool = True,
        notify: UnmapNotify | None = None,
    ) -> ShmMapping:
        """Map the pages domain ``peer`` granted us under ``refs``, contiguously;
        ``notify`` goes in the same hub request."""
        check_domid(peer, "peer domain id")
        _check_count(len(refs))
        for ref in refs:
            if isinstance(ref, bool) or not isinstance(ref, int) or not 0 <= ref < 1 << 32:
                raise ConfigError(f"grant ref {ref!r} is not a u32")
        flags, extra = _notify_args(GNT_WRITABLE if writable else 0, notify)
        reply = self._conn.call(Op.GNT_MAP, peer, flags, len(refs), *refs, *extra, error=GrantError)
        pairs = reply.values[2:]
        layout = list(zip(pairs[0::2], pairs[1::2], strict=True))
        return self._adopt(reply.values[0], reply.fds, refs, layout, writable)

    def set_unmap_notify(self, mapping: Mapping, offset: int, port: int) -> None:
        """Clear byte ``offset`` and signal local ``port`` when ``mapping`` goes away."""
        if not isinstance(mapping, ShmMapping) or self._mappings.get(mapping.handle) is not mapping:
            raise GrantError(f"{mapping!r} was not opened through this handle", err=errno.EINVAL)
        _check_notify(offset, port)
        self._call(Op.GNT_SET_NOTIFY, mapping.handle, offset, port)

    def _release_handle(self, handle: int) -> None:
        """GNT_UNMAP; a dead hub has nothing left to release, so that is not an error."""
        with contextlib.suppress(HubGoneError):
            self._call(Op.GNT_UNMAP, handle)

    def _unmapped(self, mapping: ShmMapping) -> None:
        # A mapping the handle gave up on at close() has nobody left to tell.
        if self._mappings.pop(mapping.handle, None) is mapping:
            self._release_handle(mapping.handle)

    def close(self) -> None:
        """Close every mapping still open through the handle, then the handle.

        A mapping whose buffer still has views cannot be unmapped safely; it stays mapped
        (the memory is freed when those views and the mapping are garbage), but the hub
        connection closes, so the hub fires its unmap-notify all the same.
        """
        for mapping in list(self._mappings.values()):
            try:
                mapping.close()
            except BackendError:
                self._mappings.pop(mapping.handle, None)
        self._conn.close()


def _check_count(count: int) -> None:
    if not 1 <= count <= MAX_GRANT_PAGES:
        raise ConfigError(f"cannot share or map {count} pages at once (1..{MAX_GRANT_PAGES})")


def _check_notify(offset: int, port: int) -> None:
    if not 0 <= offset < 1 << 32 or not 0 <= port < 1 << 32:
        raise ConfigError(f"unmap-notify offset {offset} or port {port} is out of range")


def _notify_args(flags: int, notify: UnmapNotify | None) -> tuple[int, tuple[int, ...]]:
    """GNT_SHARE's or GNT_MAP's flags, and the arguments to add for ``notify``."""
    if notify is None:
        return flags, ()
    _check_notify(*notify)
    return flags | GNT_NOTIFY, tuple(notify)


#: How a port sits in the epoll set when unmasked (see ShmEvents).
_ARMED = select.EPOLLIN | select.EPOLLET


@dataclass
class _BoundPort:
    """What this process holds for one bound port."""

    incoming: int
    outgoing: int
    side: int
    stats: mmap.mmap
    counters: AtomicCounters

    def __post_init__(self) -> None:
        #: Where notify counts the events this end sends.
        self.sent_counter = self.counters.address(self.side)
        #: This end's wait word (vchansim/statspage.py).
        self.wait_word = statspage.FIRST_WAIT_WORD + self.side

    def close(self) -> None:
        self.counters.release()
        self.stats.close()
        _close_held(self.incoming)
        _close_held(self.outgoing)


class ShmEvents(Events):
    """An event-channel handle: one hub connection plus an epoll over the ports' eventfds.

    A port fires at most once until unmasked: :meth:`pending` drains the port's eventfd
    and takes it out of the epoll set (``EPOLL_CTL_MOD`` with no events); :meth:`unmask`
    puts it back, and since re-arming makes epoll look at the eventfd again, an event
    that came meanwhile fires at once.  Every notify is counted in the channel's
    statistics page.

    The ports are registered edge-triggered: every notify is an edge, so this behaves
    as level-triggering would for callers of :meth:`pending`, which drains the eventfd
    -- and it lets :meth:`consume` take an event with ``epoll_wait`` alone.
    """

    def __init__(self, conn: HubConnection) -> None:
        self._conn = conn
        self._epoll = select.epoll()
        _hold(self._epoll.fileno(), "epoll of an shm event handle")
        self._ports: dict[int, _BoundPort] = {}
        self._by_fd: dict[int, int] = {}
        self._say_waits = statspage.enabled()

    def _bound(self, op: Op, *args: int) -> int:
        reply = self._conn.call(op, *args)
        port, side = reply.values
        incoming, outgoing, stats_fd = reply.fds
        _hold(incoming, f"incoming eventfd of port {port}")
        _hold(outgoing, f"outgoing eventfd of port {port}")
        try:
            stats = mmap.mmap(stats_fd, STATS_SIZE)
        finally:
            os.close(stats_fd)
        self._ports[port] = _BoundPort(
            incoming, outgoing, side, stats, AtomicCounters(memoryview(stats), statspage.WORDS)
        )
        self._by_fd[incoming] = port
        self._epoll.register(incoming, _ARMED)
        return port

    def bind_unbound(self, remote: int) -> int:
        """Allocate a port that domain ``remote`` may bind to; return it."""
        return self._bound(Op.EVT_BIND_UNBOUND, check_domid(remote, "remote domain id"))

    def bind_interdomain(self, remote: int, remote_port: int) -> int:
        """Connect to ``remote``'s unbound ``remote_port``; return the local port."""
        check_domid(remote, "remote domain id")
        if not 0 <= remote_port < 1 << 32:
            raise ConfigError(f"remote port {remote_port} is out of range")
        return self._bound(Op.EVT_BIND_INTERDOMAIN, remote, remote_port)

    def _port(self, port: int) -> _BoundPort:
        try:
            return self._ports[port]
        except KeyError:
            raise BackendError(
                f"port {port} is not bound on this handle", err=errno.ENOTCONN
            ) from None

    def notify(self, port: int) -> None:
        """Ring the other end of ``port``: count it, then one eventfd write, no hub."""
        bound = self._ports.get(port) or self._port(port)  # the second raises ENOTCONN
        eventfd_kick(bound.outgoing, bound.sent_counter)

    def waiting(self, port: int, blocked: Blocked) -> None:
        """Say in ``port``'s statistics page what this end is now asleep in (NONE when it
        wakes), for observers; nothing if the wait words are off or the port is gone."""
        bound = self._ports.get(port)
        if bound is not None and self._say_waits:
            word = statspage.encode(blocked, time.monotonic_ns() // 1000)
            bound.counters.store(bound.wait_word, word)

    def direct_wait(self, port: int) -> DirectWait:
        """The epoll (:meth:`consume` is one ``epoll_wait`` on it), ``port``'s outgoing
        eventfd and counter (what :meth:`notify` uses) and its wait word (0 if the wait
        words are off)."""
        bound = self._port(port)
        word = bound.counters.address(bound.wait_word) if self._say_waits else 0
        return DirectWait(self._epoll.fileno(), bound.outgoing, word, bound.sent_counter)

    def events_sent(self, port: int) -> tuple[int, int]:
        """Events sent so far by this end of ``port`` and by the other end."""
        bound = self._port(port)
        return bound.counters[bound.side], bound.counters[1 - bound.side]

    def pending(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` seconds for a port to fire; return it masked, or None."""
        ready = self._epoll.poll(-1 if timeout is None else max(timeout, 0.0), 1)
        if not ready:
            return None
        fd = ready[0][0]
        with contextlib.suppress(BlockingIOError):  # another thread drained it first
            os.eventfd_read(fd)
        self._epoll.modify(fd, 0)
        return self._by_fd[fd]

    def consume(self, timeout: float | None = None) -> int | None:
        """:meth:`pending` and :meth:`unmask` of the port it returns, as one call.

        Nobody can observe the port between the two (it is armed again when this
        returns), so the mask and unmask are skipped, and so is draining the eventfd:
        with edge-triggering, ``epoll_wait`` reports each burst of notifies once, and a
        notify after it is a new edge.  Waking up thus costs one system call, as a pipe's
        ``read`` does.  (The count left in the eventfd is at worst one spurious wake-up
        for a later :meth:`unmask`, which the API allows.)
        """
        fd = wait_one(self._epoll.fileno(), timeout)
        return self._by_fd[fd] if fd >= 0 else None

    def unmask(self, port: int) -> None:
        """Re-arm ``port``; ports not bound here are ignored, as the evtchn device does."""
        bound = self._ports.get(port)
        if bound is not None:
            self._epoll.modify(bound.incoming, _ARMED)

    def unbind(self, port: int) -> None:
        """Close ``port``; the peer's end returns to waiting for our domain."""
        bound = self._port(port)
        self._epoll.unregister(bound.incoming)
        del self._ports[port], self._by_fd[bound.incoming]
        bound.close()
        with contextlib.suppress(HubGoneError):  # a dead hub holds no ports
            self._conn.call(Op.EVT_UNBIND, port)

    def fileno(self) -> int:
        """The epoll descriptor: readable while an unmasked port has an event."""
        return self._epoll.fileno()

    def close(self) -> None:
        """Unbind every port and release the handle."""
        if self._epoll.closed:
            return
        for bound in self._ports.values():
            bound.close()
        self._ports.clear()
        self._by_fd.clear()
        _unhold(self._epoll.fileno())
        self._epoll.close()
        self._conn.close()  # the hub unbinds whatever the connection still held


class ShmBackend(Backend):
    """Domain ``domid`` on the hub of ``rundir`` (default: the environment's run directory).

    ``strict`` (or ``VCHANSIM_STRICT=1``) refuses loopback grants -- a domain sharing
    with itself -- the way Linux on Xen and Qubes do; the default allows them, which is
    handy for tests inside one domain.
    """

    name = "shm"

    def __init__(
        self,
        domid: int | None = None,
        *,
        rundir: RunDir | str | os.PathLike[str] | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(domid)
        self.rundir = prepare_rundir(rundir)
        self._xs_path = os.fspath(self.rundir.xs_socket(self.domid))
        self.strict = strict or os.environ.get(STRICT_ENV, "") == "1"
        # Per instance: strictness is chosen per backend, not per class.
        self.supports_loopback = not self.strict  # type: ignore[misc]

    def _connect(self) -> HubConnection:
        return open_hub(self.rundir, self.domid, strict=self.strict)

    def grants(self) -> ShmGrants:
        """Open a grant-table handle (a new hub connection)."""
        return ShmGrants(self._connect())

    def events(self) -> ShmEvents:
        """Open an event-channel handle (a new hub connection)."""
        return ShmEvents(self._connect())

    def store(self) -> XsClient:
        """Open a XenStore connection acting as this domain.

        The socket's name follows from the run directory and the domain
        (docs/hub-protocol.md), so this connects to it straight away, without a hub
        request.  Only when nobody serves it -- no hub yet, a hub that has not served this
        domain yet, a dead hub's leftover -- is the hub asked for it, which starts a hub
        if need be and makes it listen there.
        """
        prepare_rundir(self.rundir)  # still ours and private?
        try:
            return XsClient.connect_socket(self._xs_path)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            pass
        path = self.xenstore_socket()
        try:
            return XsClient.connect_socket(path)
        except OSError as exc:
            raise BackendError(
                f"cannot connect to domain {self.domid}'s xenstore socket {path}: {exc.strerror}",
                err=exc.errno,
            ) from None

    def xenstore_socket(self) -> Path:
        """This domain's xenstore socket (for ``XENSTORED_PATH`` and the real tools)."""
        with self._connect() as conn:
            return Path(conn.call(Op.XS_SOCKET, self.domid).text)

    def __repr__(self) -> str:
        mode = " strict" if self.strict else ""
        return f"<ShmBackend domid={self.domid} rundir={str(self.rundir.path)!r}{mode}>"


def emulator_env(backend: ShmBackend, *, c_libs: bool = True) -> dict[str, str]:
    """The environment a program needs to act as ``backend``'s domain on the emulator
    (``vchansim exec`` runs its program in it, the harnesses their C endpoints); with
    ``c_libs``, the drop-in libraries come first on ``LD_LIBRARY_PATH``."""
    from ..cbuild import library_dir  # the C tool chain: not for every user of the backend

    env = dict(os.environ)
    env["VCHANSIM_DOMID"] = str(backend.domid)
    env[RUNDIR_ENV] = str(backend.rundir.path)
    env["XENSTORED_PATH"] = str(backend.xenstore_socket())
    if backend.strict:
        env[STRICT_ENV] = "1"
    if c_libs:
        paths = [str(library_dir()), env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in paths if p)
    return env
