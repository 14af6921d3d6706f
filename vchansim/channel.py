"""The libxenvchan API: a vchan endpoint joined to a backend.

:meth:`Vchan.server` and :meth:`Vchan.client` set a channel up exactly as libxenvchan's
``server_init``/``client_init`` do (docs/protocol.md §5), so either end may be the C library.
I/O follows §4.7, expressed the Python way; the mapping from C return codes is in
``docs/api.md``.  In short: a count of bytes where C returns one, ``0``/``b""`` where a
non-blocking C call returns 0, and an exception from :mod:`vchansim.errors` where C
returns -1.

A channel is not thread-safe (neither is libxenvchan's): use it from one thread at a time.
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from . import layout
from .backends.base import (
    Backend,
    Events,
    Grants,
    Mapping,
    Store,
    StoreReplies,
    UnmapNotify,
    retry_while_watched,
)
from .core import ChannelCore, Waiter
from .errors import (
    BackendError,
    ChannelClosed,
    ConfigError,
    EventChannelError,
    MessageTooLarge,
    ProtocolError,
    StaleServerError,
    StoreError,
    VchanError,
)
from .ring import Notifier, Ring
from .spin import SpinPolicy
from .statspage import Blocked
from .xen import atoi, check_domid
from .xenstore.wire import Perm

#: Blocking calls re-check the peer's liveness at least this often even without an event,
#: because a crashed peer's kernel may wake us before it clears the live byte (§6.3).
LIVENESS_RECHECK = 0.5

Buffer = bytes | bytearray | memoryview
#: What a read may fill: a buffer we can write to.
WritableBuffer = bytearray | memoryview
#: A blocking step in the core: Waiter.read or Waiter.write, (ring, buffer, n, need,
#: live offset, timeout) -> bytes moved.
CoreCall = Callable[[Ring, memoryview, int, int, int, float], int]

#: What a blocking call sleeps in, by the notify bit it asked the peer for.
_BLOCKED_BY_BIT = {layout.NOTIFY_WRITE: Blocked.READ, layout.NOTIFY_READ: Blocked.WRITE}


@dataclass
class _Resources:
    """Everything an endpoint holds, released in libxenvchan's close order (§5.8)."""

    grants: Grants | None = None
    events: Events | None = None
    port: int = 0
    ctrl: Mapping | None = None
    ring_maps: list[Mapping] = field(default_factory=list)
    #: Views into the mappings (in-page rings, index arrays) to release before unmapping.
    views: list[memoryview] = field(default_factory=list)


class Vchan(ChannelCore):
    """One end of a vchan.  Create with :meth:`server` or :meth:`client`.

    ``blocking`` defaults to True (what Xen's own tools set; libxenvchan leaves it
    uninitialised).  ``timeout`` (seconds, default None = wait forever) bounds every
    blocking call, which then raises :class:`TimeoutError`.  ``spin`` says how long a
    blocking call polls the ring before sleeping on the event channel: ``"off"``
    (default, libxenvchan's behaviour), ``"adaptive"`` or a budget in microseconds.
    """

    def __init__(
        self,
        backend: Backend,
        res: _Resources,
        *,
        server: bool,
        peer: int,
        xs_path: str,
        blocking: bool,
    ) -> None:
        assert res.ctrl is not None and res.events is not None
        self.backend = backend
        self.is_server = server
        self.peer = peer
        self.xs_path = xs_path
        self.blocking = blocking
        self.timeout: float | None = None
        self._spin = SpinPolicy()
        #: Server only: report the channel open even after a client left (libxenvchan's
        #: ``server_persist``), so a new client may connect to the same rings.
        self.server_persist = False
        self._res = res
        self._events = res.events
        self._port = res.port
        self._page = res.ctrl.buf
        self._live = layout.CLI_LIVE if server else layout.SRV_LIVE
        self._recheck = LIVENESS_RECHECK
        self._rd: Ring
        self._wr: Ring
        self._notify = Notifier(self._page, server=server)
        self._closed = False
        # Bound once: the wake path's abilities of the handle (see Events).
        self._consume = res.events.consume
        self._say_waiting = res.events.waiting
        direct = res.events.direct_wait(res.port)
        #: Blocking reads and writes in one call into the core, where the handle allows
        #: (see Events.direct_wait); ``_core_waits`` is it while no spin polls first.
        self._waiter = None if direct is None else Waiter(self._notify, *direct)
        self._core_waits = self._waiter

    # -- construction -------------------------------------------------------------------
    @classmethod
    def server(
        cls,
        backend: Backend,
        domain: int,
        path: str,
        read_min: int = 0,
        write_min: int = 0,
        *,
        blocking: bool = True,
    ) -> Vchan:
        """Offer a vchan to domain ``domain`` at XenStore ``path`` (libxenvchan_server_init).

        ``read_min``/``write_min`` are the smallest ring sizes wanted for receiving and
        sending; the orders are chosen as libxenvchan does.  Returns at once: the client
        connects later (``is_open()`` is 2 until then).
        """
        check_domid(domain, "client domain id")
        left_order, right_order = layout.choose_orders(read_min, write_min)
        layout.check_xs_path(path)
        res = _Resources()
        chan: Vchan | None = None
        # All three connections are opened before the first request, so that the hub
        # takes them in with one wake-up, not one each; what the XenStore part can ask
        # before the port and grant exist goes out at once and is answered meanwhile.
        store = backend.store()
        try:
            started = store.pipeline().read("domid").transaction_start().submit()
            res.events = backend.events()
            res.grants = backend.grants()
            res.port = res.events.bind_unbound(domain)
            res.ctrl = res.grants.share(domain, 1, notify=UnmapNotify(layout.SRV_LIVE, res.port))
            # Nothing is visible before the commit, which waits for the page and rings.
            publication = _Publication.stage(
                store, started, path, domain, res.ctrl.refs[0], res.port
            )
            geometry = _init_page(res.ctrl.buf, left_order, right_order)
            rings = [
                _server_ring_buffer(res, domain, placement, geometry)
                for placement in (geometry.left, geometry.right)
            ]
            chan = cls(backend, res, server=True, peer=domain, xs_path=path, blocking=blocking)
            chan._attach_rings(read_buf=rings[0], write_buf=rings[1], geometry=geometry)
            publication.commit()
        except BaseException:
            if chan is not None:
                chan._drop_views()
            _release(res, server=True)
            raise
        finally:
            store.close()
        return chan

    @classmethod
    def client(
        cls,
        backend: Backend,
        domain: int,
        path: str,
        *,
        blocking: bool = True,
        wait: float = 0.0,
    ) -> Vchan:
        """Connect to the vchan domain ``domain`` serves at ``path`` (libxenvchan_client_init).

        Like libxenvchan it does not wait by default: if no server has published the path
        yet it raises :class:`~vchansim.errors.StoreError` (ENOENT).  ``wait`` seconds
        instead watch the server's ring-ref key and retry each time it changes, so a client
        may start before its server; the last StoreError is raised when they run out.
        """
        check_domid(domain, "server domain id")
        layout.check_xs_path(path)
        if not wait >= 0:  # also catches nan, which would make the wait endless
            raise ConfigError(f"wait={wait!r} is not a number of seconds >= 0")
        if wait == 0:
            return cls._connect(backend, domain, path, blocking)
        deadline = time.monotonic() + wait
        watcher = backend.store()
        try:
            watcher.watch(layout.key_path(path, layout.RING_REF_KEY), "vchansim-client-wait")
            return retry_while_watched(
                watcher,
                lambda: cls._connect(backend, domain, path, blocking),
                (StoreError, StaleServerError),
                deadline,
            )
        finally:
            watcher.close()

    @classmethod
    def _connect(cls, backend: Backend, domain: int, path: str, blocking: bool) -> Vchan:
        """One attempt of :meth:`client`: look the server's keys up and map its rings."""
        res = _Resources()
        chan: Vchan | None = None
        store = backend.store()
        try:
            # The lookup goes out first; the hub takes both handles' connections in
            # while the answer is on its way.
            lookup = _Lookup(store, domain, path)
            res.grants = backend.grants()
            res.events = backend.events()
            ring_ref, remote_port = lookup.result()
            with _stale_if_refused(domain, path, f"binding its event-channel port {remote_port}"):
                res.port = res.events.bind_interdomain(domain, remote_port)
            with _stale_if_refused(domain, path, f"mapping its ring-ref {ring_ref}"):
                res.ctrl = res.grants.map(
                    domain, [ring_ref], notify=UnmapNotify(layout.CLI_LIVE, res.port)
                )
            page = res.ctrl.buf
            with page[layout.LEFT_ORDER : layout.LEFT_ORDER + 4].cast("H") as orders:
                left_order, right_order = orders  # read once, kept locally (§2.4)
            geometry = layout.Geometry.for_orders(left_order, right_order)
            write_buf = _client_ring_buffer(res, domain, geometry.left, writable=True)
            read_buf = _client_ring_buffer(res, domain, geometry.right, writable=False)
            chan = cls(backend, res, server=False, peer=domain, xs_path=path, blocking=blocking)
            chan._attach_rings(read_buf=read_buf, write_buf=write_buf, geometry=geometry)
            page[layout.CLI_LIVE] = layout.LIVE_CONNECTED
            page[layout.SRV_NOTIFY] = layout.NOTIFY_WRITE
            res.events.notify(res.port)
        except BaseException:
            if chan is not None:
                chan._drop_views()
            _release(res, server=False)
            raise
        finally:
            store.close()
        return chan

    def _attach_rings(
        self, *, read_buf: memoryview, write_buf: memoryview, geometry: layout.Geometry
    ) -> None:
        """Build both rings over the page's indices; the server reads left, the client right."""
        self._indices = self._page[: layout.LEFT_ORDER].cast("I")
        self._res.views.append(self._indices)
        left_buf, right_buf = (read_buf, write_buf) if self.is_server else (write_buf, read_buf)
        left = Ring.left(self._indices, left_buf, geometry.left.order)
        right = Ring.right(self._indices, right_buf, geometry.right.order)
        self._rd, self._wr = (left, right) if self.is_server else (right, left)

    # -- state --------------------------------------------------------------------------
    @property
    def spin(self) -> str | float:
        """The spin policy: "adaptive", "off" or a budget in microseconds."""
        return self._spin.setting

    @spin.setter
    def spin(self, setting: str | float) -> None:
        self._spin = SpinPolicy(setting)
        polls = self._spin.budget_us or self._spin.adaptive
        self._core_waits = None if polls else self._waiter

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def read_ring(self) -> Ring:
        """The ring this end consumes (left for a server, right for a client)."""
        return self._rd

    @property
    def write_ring(self) -> Ring:
        """The ring this end produces."""
        return self._wr

    @property
    def port(self) -> int:
        """This end's local event-channel port."""
        return self._port

    def is_open(self) -> int:
        """The peer's liveness as libxenvchan reports it: 0 closed, 1 connected, 2 (server
        only) no client yet; a hostile peer's other values are passed through."""
        self._check_not_closed()
        if self.is_server and self.server_persist:
            return 1
        return self._page[self._live]

    def data_ready(self) -> int:
        """Bytes readable now.  Arms a WRITE notification so ``fileno()`` wakes on more."""
        self._check_not_closed()
        self._notify.request(layout.NOTIFY_WRITE)
        return self._rd.data_ready()

    def buffer_space(self) -> int:
        """Bytes writable now.  Arms a READ notification so ``fileno()`` wakes on space."""
        self._check_not_closed()
        self._notify.request(layout.NOTIFY_READ)
        return self._wr.buffer_space()

    def fileno(self) -> int:
        """The event-channel descriptor, for ``select``/``poll``; then call ``wait(0)``."""
        self._check_not_closed()
        return self._events.fileno()

    def wait(self, timeout: float | None = None) -> bool:
        """Consume one event (blocking up to ``timeout``; None = forever).

        Returns False if none came in time.  Wake-ups may be spurious or coalesced:
        re-check ``data_ready``/``buffer_space``/``is_open`` afterwards.
        """
        self._check_not_closed()
        return self._consume_event(timeout)

    # -- reading --------------------------------------------------------------------------
    # Each call starts with a fast path -- the ring already holds what it needs, or (for
    # read_into and write, in the core) the core may wait for it -- that makes no other
    # method call than the copy and the notify test, because in Python the calls, not the
    # copying, are what a small message costs.  Everything else (empty ring, closed peer,
    # non-blocking mode, waiting) is the slow path.
    def read(self, n: int) -> bytes:
        """Stream read: 1..n bytes (blocking), or ``b""`` if non-blocking and empty.

        Raises :class:`ChannelClosed` once the peer closed and the ring is drained.
        """
        buf = bytearray(n)
        got = self.read_into(buf)
        del buf[got:]
        return bytes(buf)

    # read_into (and write) are the core's (ChannelCore): a blocking call with no timeout
    # and no spin runs whole in it, and a reader woken for data goes straight back to the
    # application.  What it does not finish comes here.
    def _read_on(self, buf: WritableBuffer, nbytes: int | None, waited: bool) -> int:
        """A stream read the core did not finish: ``waited``, it looked and slept, and
        came back empty at the peer's close or a liveness re-check; else it did not run."""
        if self._closed:
            raise ValueError("I/O operation on a closed vchan")
        if not waited:
            # Non-blocking, a partial read takes the slow path, which arms an event.
            got = self._rd.get(buf, nbytes, 1 if self.blocking else None)
            if got:
                if self._notify.take(layout.NOTIFY_READ):
                    self._kick(got)
                return got
        dst, n = self._target(buf, nbytes)
        return self._read_slow(dst, n, 1) if n else 0

    def recv(self, n: int) -> bytes:
        """Packet read: exactly n bytes, or ``b""`` if non-blocking and fewer are there."""
        buf = bytearray(n)
        got = self.recv_into(buf)
        return bytes(buf) if got else b""

    def recv_into(self, buf: WritableBuffer, nbytes: int | None = None) -> int:
        """Packet read of exactly ``nbytes`` (default ``len(buf)``) into ``buf``.

        Returns ``nbytes``, or 0 if non-blocking and not all of them are there yet.
        Raises :class:`MessageTooLarge` if the ring can never hold that many, and
        :class:`ChannelClosed` if the peer closed with fewer in the ring.
        """
        if self._closed:
            raise ValueError("I/O operation on a closed vchan")
        got = self._rd.get(buf, nbytes, None)
        if got:
            if self._notify.take(layout.NOTIFY_READ):
                self._kick(got)
            return got
        dst, n = self._target(buf, nbytes)
        if n > self._rd.size:
            raise MessageTooLarge(
                f"recv of {n} bytes can never complete: the read ring holds {self._rd.size}"
            )
        return self._read_slow(dst, n, n) if n else 0

    def __iter__(self) -> Iterator[bytes]:
        """Yield chunks as they arrive until the peer closes (blocking channels only)."""
        chunk = max(self._rd.size, 4096)
        while True:
            try:
                data = self.read(chunk)
            except ChannelClosed:
                return
            if data:
                yield data
            elif not self.blocking:
                return

    # -- writing --------------------------------------------------------------------------
    def _write_on(self, data: Buffer, done: int | None) -> int:
        """A stream write the core did not finish: it put ``done`` bytes in before the
        peer closed or a liveness re-check came due; None: it did not run."""
        if done is None:
            if self._closed:
                raise ValueError("I/O operation on a closed vchan")
            if not (self._page[self._live] or self._peer_open()):  # the common case first
                raise ChannelClosed()
            n = self._wr.put(data)
            if n > 0:
                if self._notify.take(layout.NOTIFY_WRITE):
                    self._kick(n)
                return n
            done = 0
        src = self._source(data)
        return self._write_slow(src, len(src), done)

    def send(self, data: Buffer) -> int:
        """Packet write, all or nothing: ``len(data)``, or 0 if non-blocking and it does
        not fit yet.  Raises :class:`MessageTooLarge` if it can never fit."""
        if self._closed:
            raise ValueError("I/O operation on a closed vchan")
        if self._page[self._live] or self._peer_open():
            n = self._wr.put(data)
            if n >= 0:
                if self._notify.take(layout.NOTIFY_WRITE):
                    self._kick(n)
                return n
        src = self._source(data)
        n = len(src)
        if n > self._wr.size:
            raise MessageTooLarge(
                f"send of {n} bytes can never complete: the write ring holds {self._wr.size}"
            )
        return self._send_slow(src, n)

    # -- closing ----------------------------------------------------------------------------
    def drain(self, timeout: float | None = None) -> int:
        """Wait until the peer has consumed everything this end wrote, or has closed, or
        ``timeout`` seconds passed (None: the channel's ``timeout``; 0: just look); return
        how many written bytes it has not consumed (0: all of them were).

        libxenvchan cannot close without losing what the peer has not read yet; calling
        this first makes a close lossless, or says how much a close will lose.  A server
        whose client has not come yet waits for it.  Each look arms a READ notification,
        so ``fileno()`` wakes an event loop when the peer consumes more.
        """
        self._check_not_closed()
        timeout = self.timeout if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        wr = self._wr
        while True:
            self._notify.request(layout.NOTIFY_READ)
            unread = wr.size - wr.buffer_space()
            if not unread or not self._peer_open():
                return unread
            step = LIVENESS_RECHECK
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
                if step <= 0:
                    return unread
            self._consume_event(step, Blocked.WRITE)

    def close(self) -> None:
        """Close as libxenvchan does: live byte 0, unmap (the peer gets its events), and
        the server removes its XenStore keys.  Data already in the rings stays readable
        by the peer.  Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._page[layout.SRV_LIVE if self.is_server else layout.CLI_LIVE] = layout.LIVE_CLOSED
        self._drop_views()
        _release(self._res, server=self.is_server)
        if self.is_server:
            _unpublish(self.backend, self.xs_path)

    def _drop_views(self) -> None:
        """Let go of every view of the shared memory, so the mappings can be unmapped."""
        self._notify.release()
        for ring in (getattr(self, "_rd", None), getattr(self, "_wr", None)):
            if ring is not None:
                ring.release()
        self._page = memoryview(b"")

    def __enter__(self) -> Vchan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        role = "server" if self.is_server else "client"
        state = "closed" if self._closed else f"peer live={self._page[self._live]}"
        return f"<Vchan {role} peer=dom{self.peer} path={self.xs_path!r} {state}>"

    # -- the §4 machinery ---------------------------------------------------------------
    def _peer_open(self) -> bool:
        return self._page[self._live] != 0 or (self.is_server and self.server_persist)

    def _fast_data_ready(self, request: int) -> int:
        """libxenvchan's data check: fewer than ``request`` bytes arms a WRITE event."""
        ready = self._rd.data_ready()
        if ready >= request:
            return ready
        self._notify.request(layout.NOTIFY_WRITE)
        return self._rd.data_ready()

    def _fast_buffer_space(self, request: int) -> int:
        """libxenvchan's space check: less than ``request`` bytes arms a READ event."""
        space = self._wr.buffer_space()
        if space >= request:
            return space
        self._notify.request(layout.NOTIFY_READ)
        return self._wr.buffer_space()

    def _transmit(self, src: memoryview, n: int) -> int:
        """Put ``n`` bytes of ``src``, found to fit a moment ago, and kick the peer if it
        asked.  Returns n, or 0 having written nothing if they no longer fit: only a
        hostile peer takes space back (moves its ``cons`` backwards) in between, and to
        the writer that is a ring with no room -- libxenvchan's sanitised view."""
        if self._wr.put(src, n) < 0:
            return 0
        if self._notify.take(layout.NOTIFY_WRITE):
            self._kick(n)
        return n

    def _kick(self, transferred: int) -> None:
        try:
            self._events.notify(self._port)
        except OSError as exc:
            raise EventChannelError(
                f"notify on port {self._port} failed after {transferred} bytes were "
                f"committed: {exc}",
                transferred=transferred,
                err=exc.errno,
            ) from exc

    def _read_slow(self, dst: memoryview, n: int, need: int) -> int:
        """Read once ``need`` (1 for a stream, n for a packet) bytes are there, up to n.

        Non-blocking, a read that finds fewer than n bytes arms a WRITE event as
        libxenvchan's does, so that an event loop polling ``fileno()`` wakes up when more
        come.  Blocking, the event is armed only when the call is about to sleep.
        """
        rd = self._rd
        deadline = self._deadline()
        look = not self.blocking  # blocking, the fast path has just looked
        while True:
            if look:
                if not self.blocking:
                    self._fast_data_ready(n)
                got = rd.get(dst, n, need)
                if got:
                    if self._notify.take(layout.NOTIFY_READ):
                        self._kick(got)
                    return got
            look = True
            if not self._peer_open():
                if rd.data_ready() >= need:
                    continue  # written just before the close: deliver it (unlike the C library)
                if need > 1:
                    raise ChannelClosed(f"the peer closed with fewer than {n} bytes in the ring")
                raise ChannelClosed()
            if not self.blocking:
                return 0
            waiter = self._core_waits
            if waiter is None:
                self._block(deadline, rd, layout.NOTIFY_WRITE, need)
                continue
            got = self._core_wait(waiter.read, rd, dst, n, need, deadline)
            if got:
                return got

    def _write_slow(self, src: memoryview, n: int, pos: int = 0) -> int:
        """A write that does not fit at once: part of it (non-blocking), or all of it as
        the reader makes room (blocking), of which ``pos`` bytes are in already."""
        wr = self._wr
        if not self.blocking:
            m = min(n, self._fast_buffer_space(n))
            return self._transmit(src, m) if m else 0
        deadline = self._deadline()
        while True:
            waiter = self._core_waits
            if waiter is None:
                chunk = min(wr.buffer_space(), n - pos)
                if chunk:
                    pos += self._transmit(src[pos:] if pos else src, chunk)
                if pos == n:
                    return n
                self._block(deadline, wr, layout.NOTIFY_READ, 1, pos)
            else:
                rest = src[pos:] if pos else src
                pos += self._core_wait(waiter.write, wr, rest, n - pos, 1, deadline, pos)
                if pos == n:
                    return n
            if not self._peer_open():
                raise ChannelClosed(
                    f"the peer closed after {pos} of {n} bytes were written", written=pos
                )

    def _send_slow(self, src: memoryview, n: int) -> int:
        """A packet that does not fit yet: 0 (non-blocking), or wait for room (blocking)."""
        wr = self._wr
        deadline = self._deadline()
        while True:
            if not self._peer_open():
                raise ChannelClosed()
            space = wr.buffer_space() if self.blocking else self._fast_buffer_space(n)
            if n <= space and self._transmit(src, n):
                return n
            if not self.blocking:
                return 0
            waiter = self._core_waits
            if waiter is None:
                self._block(deadline, wr, layout.NOTIFY_READ, n)
                continue
            if self._core_wait(waiter.write, wr, src, n, n, deadline) == n:
                return n

    def _core_wait(
        self,
        call: CoreCall,
        ring: Ring,
        buf: memoryview,
        n: int,
        need: int,
        deadline: float | None,
        before: int = 0,
    ) -> int:
        """One wait of a slow path in the core: ``call`` (the Waiter's read or write)
        moves up to ``n`` bytes of ``buf``, at least ``need`` at a time, sleeping until
        the next liveness re-check at most, and never past ``deadline``.  Returns the
        count (0: the peer closed, or the re-check came due).  A failed wait or kick is
        the channel's error, and a deadline that passed with too little moved times the
        call out; ``before`` bytes went in in earlier steps."""
        step = self._step(deadline)
        try:
            moved = call(ring, buf, n, need, self._live_offset(), step)
        except OSError as exc:
            raise self._core_error(exc, before) from exc
        if moved < need and step <= 0:
            raise self._timed_out(before)
        return moved

    def _deadline(self) -> float | None:
        return None if self.timeout is None else time.monotonic() + self.timeout

    def _step(self, deadline: float | None) -> float:
        """How long one wait may last: LIVENESS_RECHECK, cut to what is left before the
        deadline (0 once it passed: look once more, then time out)."""
        if deadline is None:
            return LIVENESS_RECHECK
        return min(LIVENESS_RECHECK, max(deadline - time.monotonic(), 0.0))

    def _timed_out(self, written: int) -> TimeoutError:
        exc = TimeoutError(errno.ETIMEDOUT, f"vchan call timed out after {self.timeout} s")
        exc.characters_written = written  # type: ignore[attr-defined]
        return exc

    def _live_offset(self) -> int:
        """The peer's live byte for the core to watch; -1 while a persistent server
        counts its client as there."""
        return -1 if self.is_server and self.server_persist else self._live

    def _core_error(self, exc: OSError, before: int) -> EventChannelError:
        """A kick or wait that failed inside the core; a kick that failed after bytes were
        committed says how many (``before`` of them in earlier calls)."""
        moved = getattr(exc, "characters_written", None)
        if moved is None:
            return EventChannelError(
                f"waiting on event channel port {self._port} failed: {exc}", err=exc.errno
            )
        return EventChannelError(
            f"notify on port {self._port} failed after {before + moved} bytes were "
            f"committed: {exc}",
            transferred=before + moved,
            err=exc.errno,
        )

    def _block(
        self, deadline: float | None, ring: Ring, bit: int, need: int, written: int = 0
    ) -> None:
        """Wait until ``ring`` may hold ``need`` bytes of data (``bit`` NOTIFY_WRITE: kick
        me when you write) or of space (NOTIFY_READ: when you read), or the peer closed
        -- the way of a handle the core cannot sleep on, or of a spinning end.

        First poll the ring for the spin budget without asking the peer for anything: a
        peer that keeps pace is caught with no event sent or taken.  Then, as libxenvchan
        does, arm ``bit``, re-check, and sleep for one event -- at most LIVENESS_RECHECK,
        and never past ``timeout``.
        """
        spin = self._spin
        started = time.perf_counter() if spin.adaptive else 0.0
        ready = _readiness(ring, bit, need)
        if (spin.budget_us or spin.adaptive) and spin.spin(ready):
            return
        self._notify.request(bit)
        if not ready() and self._peer_open():
            step = self._step(deadline)
            if step <= 0:
                raise self._timed_out(written)
            self._consume_event(step, _BLOCKED_BY_BIT[bit])
        if spin.adaptive:
            spin.observe((time.perf_counter() - started) * 1e6)

    def _consume_event(self, timeout: float | None, blocked: Blocked = Blocked.EVENT) -> bool:
        """Wait for our port to fire and consume the event, leaving the port armed; a wait
        that may sleep is announced as ``blocked`` for observers while it lasts."""
        sleeps = timeout != 0
        if sleeps:
            self._say_waiting(self._port, blocked)
        try:
            return self._consume(timeout) is not None
        except OSError as exc:
            raise EventChannelError(
                f"waiting on event channel port {self._port} failed: {exc}", err=exc.errno
            ) from exc
        finally:
            if sleeps:
                self._say_waiting(self._port, Blocked.NONE)

    def _check_not_closed(self) -> None:
        if self._closed:
            raise ValueError("I/O operation on a closed vchan")

    def _target(self, buf: WritableBuffer, nbytes: int | None) -> tuple[memoryview, int]:
        """``buf`` as a writable byte view, and the count asked for (the slow paths)."""
        dst = buf if type(buf) is memoryview else memoryview(buf)
        if dst.format != "B" or dst.ndim != 1:
            dst = dst.cast("B")
        if dst.readonly:
            raise TypeError("read_into/recv_into need a writable buffer")
        n = dst.nbytes if nbytes is None else nbytes
        if not 0 <= n <= dst.nbytes:
            raise ValueError(f"nbytes={n} does not fit a {dst.nbytes}-byte buffer")
        return dst, n

    def _source(self, data: Buffer) -> memoryview:
        """``data`` as a byte view (the slow paths)."""
        src = data if type(data) is memoryview else memoryview(data)
        return src if src.format == "B" and src.ndim == 1 else src.cast("B")


def _readiness(ring: Ring, bit: int, need: int) -> Callable[[], bool]:
    """A test of whether ``ring`` holds ``need`` bytes of data (``bit`` NOTIFY_WRITE) or
    of space (NOTIFY_READ)."""
    if bit == layout.NOTIFY_WRITE:
        return lambda: ring.data_ready() >= need
    return lambda: ring.buffer_space() >= need


# -- setup helpers (module level: they run before a Vchan exists) ----------------------
def _init_page(page: memoryview, left_order: int, right_order: int) -> layout.Geometry:
    """Write a fresh control page as server_init does (§2.5)."""
    page[:] = bytes(len(page))
    orders = page[layout.LEFT_ORDER : layout.LEFT_ORDER + 4].cast("H")
    orders[0], orders[1] = left_order, right_order
    orders.release()
    page[layout.CLI_LIVE] = layout.LIVE_WAITING
    page[layout.SRV_LIVE] = layout.LIVE_CONNECTED
    page[layout.CLI_NOTIFY] = layout.NOTIFY_WRITE
    return layout.Geometry.for_orders(left_order, right_order)


def _in_page(res: _Resources, placement: layout.RingPlacement) -> memoryview:
    """An in-page ring's bytes, as a view recorded for release."""
    assert res.ctrl is not None and placement.in_page_offset is not None
    view = res.ctrl.buf[placement.in_page_offset : placement.in_page_offset + placement.size]
    res.views.append(view)
    return view


def _grant_slots(page: memoryview, placement: layout.RingPlacement) -> memoryview:
    start = layout.GRANTS + 4 * placement.first_grant
    return page[start : start + 4 * placement.pages].cast("I")


def _server_ring_buffer(
    res: _Resources, domain: int, placement: layout.RingPlacement, geometry: layout.Geometry
) -> memoryview:
    """The buffer for one ring: in the control page, or newly granted pages."""
    assert res.ctrl is not None and res.grants is not None
    if placement.in_page_offset is not None:
        return _in_page(res, placement)
    mapping = res.grants.share(domain, placement.pages)
    res.ring_maps.append(mapping)
    slots = _grant_slots(res.ctrl.buf, placement)
    for i, ref in enumerate(mapping.refs):
        slots[i] = ref
    slots.release()
    return mapping.buf


def _client_ring_buffer(
    res: _Resources, domain: int, placement: layout.RingPlacement, *, writable: bool
) -> memoryview:
    assert res.ctrl is not None and res.grants is not None
    if placement.in_page_offset is not None:
        return _in_page(res, placement)
    slots = _grant_slots(res.ctrl.buf, placement)
    refs = slots.tolist()
    slots.release()
    mapping = res.grants.map(domain, refs, writable=writable)
    res.ring_maps.append(mapping)
    return mapping.buf


class _Publication:
    """Ring-ref and event-channel written in one transaction, retrying on EAGAIN (§7.9),
    in two steps so that the writes' round trip overlaps the server's own work:
    :meth:`stage` sends the writes with their permissions, :meth:`commit` reads their
    answers and commits -- only once every one of them succeeded."""

    def __init__(self, store: Store, tx: int, nodes: list[tuple[str, bytes]], perms: list[Perm]):
        self._store = store
        self._tx = tx
        self._nodes = nodes
        self._perms = perms
        self._writes = self._send()

    @classmethod
    def stage(
        cls, store: Store, started: StoreReplies, path: str, client: int, ring_ref: int, port: int
    ) -> _Publication:
        """Send the writes; ``started`` holds the replies to reading our domid and
        starting the transaction, sent before the port and grant were made."""
        nodes = [
            (layout.key_path(path, key), str(value).encode())
            for key, value in ((layout.RING_REF_KEY, ring_ref), (layout.EVENT_CHANNEL_KEY, port))
        ]
        own, tx = started.results()
        return cls(store, tx, nodes, [Perm("n", atoi(own)), Perm("r", client)])

    def _send(self) -> StoreReplies:
        writes = self._store.pipeline()
        for node, value in self._nodes:
            writes.write(node, value, self._tx).set_perms(node, self._perms, self._tx)
        return writes.submit()

    def commit(self) -> None:
        """Check the writes and commit; a conflicting commit starts over."""
        while True:
            self._writes.results()
            try:
                self._store.transaction_end(self._tx, commit=True)
                return
            except StoreError as exc:
                if exc.errno != errno.EAGAIN:
                    raise
            self._tx = self._store.transaction_start()
            self._writes = self._send()


def _unpublish(backend: Backend, path: str) -> None:
    """Remove the server's XenStore subtree (Xen >= 4.17); failures are ignored as in C."""
    try:
        store = backend.store()
    except OSError:
        return
    try:
        store.rm(path)
    except OSError:
        pass
    finally:
        store.close()


class _Lookup:
    """Reading (in one round trip) and checking the server's ring-ref and event-channel
    keys: the requests go out when it is made, :meth:`result` reads the answer."""

    def __init__(self, store: Store, domain: int, path: str) -> None:
        self._domain = domain
        self._path = path
        keys = (layout.RING_REF_KEY, layout.EVENT_CHANNEL_KEY)
        self._nodes = [layout.key_path(path, key) for key in keys]
        self._replies = store.pipeline().read(self._nodes[0]).read(self._nodes[1]).submit()

    def result(self) -> tuple[int, int]:
        """The ring-ref and the port; StoreError when there is no server there."""
        try:
            raws = self._replies.results()
        except StoreError as exc:
            raise StoreError(
                f"no vchan server for domain {self._domain} at {self._path!r}: reading "
                f"{exc.filename} failed ({errno.errorcode.get(exc.errno or 0, exc.errno)})",
                err=exc.errno,
            ) from exc
        ring_ref, port = (_positive(node, raw) for node, raw in zip(self._nodes, raws, strict=True))
        return ring_ref, port


#: How Xen refuses a port or grant that is not (any more) there for us.
_REFUSED = frozenset({errno.EINVAL, errno.EPERM})


@contextlib.contextmanager
def _stale_if_refused(domain: int, path: str, what: str) -> Iterator[None]:
    """Turn the refusal of a port or grant the server published into StaleServerError:
    the keys outlived their server (or another client holds it)."""
    try:
        yield
    except BackendError as exc:
        if exc.errno not in _REFUSED:
            raise
        raise StaleServerError(
            f"no live vchan server for domain {domain} at {path!r}: {what} failed ({exc}); "
            "its keys are stale (a server that died leaves them behind) or another client "
            "took it",
            err=exc.errno,
        ) from exc


def _positive(node: str, raw: bytes) -> int:
    """``raw`` read as libxenvchan does (atoi); anything below 1 breaks the protocol."""
    value = atoi(raw)
    if value <= 0:
        raise ProtocolError(f"{node} holds {raw!r}, not a positive number")
    return value


def _release(res: _Resources, *, server: bool) -> None:
    """Tear down in libxenvchan's order: rings, control page (its unmap-notify fires),
    one explicit kick, event channel, grant handle."""
    errors: list[BaseException] = []
    for view in res.views:
        view.release()
    res.views.clear()

    def attempt(action: object) -> None:
        try:
            action()  # type: ignore[operator]
        except Exception as exc:  # keep releasing the rest; report the first failure
            errors.append(exc)

    for mapping in res.ring_maps:
        attempt(mapping.close)
    res.ring_maps.clear()
    if res.ctrl is not None:
        attempt(res.ctrl.close)
        if res.events is not None and res.port:
            attempt(lambda: res.events.notify(res.port))
        res.ctrl = None
    if res.events is not None:
        attempt(res.events.close)
        res.events = None
    if res.grants is not None:
        attempt(res.grants.close)
        res.grants = None
    if errors and not isinstance(errors[0], VchanError):
        raise VchanError(f"closing the vchan failed: {errors[0]}") from errors[0]
    if errors:
        raise errors[0]


__all__ = ["ChannelClosed", "ConfigError", "MessageTooLarge", "Vchan"]
