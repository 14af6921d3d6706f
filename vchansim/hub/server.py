"""The hub daemon: one ``selectors`` loop serving the control socket and the xenstores.

It plays what sits outside the endpoints on a real Xen host -- the hypervisor's grant
table and event-channel allocator, the kernel drivers' unmap-notify, xenstored -- for
every process that reaches ``<rundir>/hub``.  See docs/hub-protocol.md for the contract.

Each control connection is a handle.  When it ends, however its process ended, the hub
fires the handle's unmap-notifies and releases its grants and ports: that end-of-file is
the only way a SIGKILLed process can still be noticed by its peer, so the loop never
blocks on a client -- a client that does not read its replies is dropped instead.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from ..rundir import RunDir
from ..unixsock import listen_unix
from ..xen import DOMID_MAX, DOMID_SELF, RequestError
from ..xenmodel.grants import check_page_count
from ..xenstore.server import XenstoreService
from ..xenstore.store import PRIVILEGED_DOMID, LogLine, Xenstored
from .events import Port, PortTable
from .grants import GrantHandle, GrantTable
from .limits import HubLimits
from .protocol import (
    GNT_NOTIFY,
    GNT_WRITABLE,
    HELLO_STRICT,
    MAX_FDS,
    REQUEST_MAX,
    VERSION,
    Op,
    decode_request,
    encode_error,
    encode_reply,
    recv_message,
    send_message,
)

#: The flags GNT_SHARE and GNT_MAP know.
_GNT_FLAGS = GNT_WRITABLE | GNT_NOTIFY
#: Seconds an embedded hub lingers with no connection before exiting.
DEFAULT_IDLE = 5.0
#: Seconds a logged line may wait in memory while the hub serves, and how many lines:
#: a stream of requests then costs one log write per batch, and whoever watches the log
#: still sees each line at once.
LOG_DELAY = 0.05
LOG_BATCH = 1024
#: Requests served from one client per wakeup, so a chatty client cannot starve others.
_REQUESTS_PER_WAKEUP = 16
#: Room for the largest STATE reply (see docs/hub-protocol.md).
_SEND_BUFFER = 1 << 20
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Requests whose refusals are answered but not logged: libvchan-xen asks EVT_STATUS on
#: every ``libvchan_is_open()`` and expects ESRCH or EINVAL as ordinary answers.
_UNLOGGED_REFUSALS = frozenset({Op.EVT_STATUS.name})


def _check_domid(domid: int, what: str) -> int:
    if domid > DOMID_MAX:
        raise RequestError(errno.EINVAL, f"{what} {domid} is outside Xen's range 0..{DOMID_MAX}")
    return domid


def _check_flags(flags: int, known: int, what: str) -> int:
    if flags & ~known:
        raise RequestError(errno.EINVAL, f"unknown {what} flags {flags:#x}")
    return flags


def _notify_note(notify: list[int]) -> str:
    """The log's words for a GNT_NOTIFY request's unmap-notify."""
    return f", unmap-notify byte {notify[0]} port {notify[1]}" if notify else ""


@dataclass
class Outcome:
    """What a request produced: reply values or text, descriptors, and a note for the log."""

    values: tuple[int, ...] = ()
    text: str = ""
    fds: tuple[int, ...] = ()
    note: str = ""


class Client:
    """One control connection: a handle holding grants and ports for one domain."""

    def __init__(self, sock: socket.socket, cid: int) -> None:
        self.sock = sock
        self.id = cid
        self.domid: int | None = None
        self.pid = 0
        self.strict = False
        self.handles: dict[int, GrantHandle] = {}
        self.ports: dict[int, Port] = {}
        #: Ports its domain's destruction closed: unbinding one later is not an error.
        self.closed_ports: set[int] = set()
        #: Replies waiting until the requests at hand are served (see Hub._reply).
        self.held: list[bytes] = []
        self._handle_ids = itertools.count(1)

    def add_handle(self, handle: GrantHandle) -> int:
        """Register ``handle`` and return its number on this connection."""
        number = next(self._handle_ids)
        self.handles[number] = handle
        return number

    def handle(self, number: int) -> GrantHandle:
        """The handle ``number``; ENOENT if this connection has no such handle."""
        try:
            return self.handles[number]
        except KeyError:
            raise RequestError(
                errno.ENOENT, f"no grant handle {number} on this connection"
            ) from None

    @property
    def who(self) -> str:
        """How log lines name this connection."""
        domain = "dom?" if self.domid is None else f"dom{self.domid}"
        return f"{domain} pid {self.pid} conn {self.id}"

    def describe(self) -> dict[str, object]:
        """The connection as the STATE reply shows it."""
        return {
            "id": self.id,
            "domid": self.domid,
            "pid": self.pid,
            "strict": self.strict,
            "handles": [{"handle": n, **h.describe()} for n, h in sorted(self.handles.items())],
            "ports": sorted(self.ports),
        }


class Hub:
    """The daemon.  :meth:`open` binds its sockets, :meth:`serve` runs until stopped."""

    def __init__(
        self,
        rundir: RunDir,
        *,
        embedded: bool = False,
        idle: float = DEFAULT_IDLE,
        limits: HubLimits | None = None,
        log: TextIO = sys.stderr,
    ) -> None:
        self.rundir = rundir
        self.embedded = embedded
        self.idle = idle
        self.limits = limits if limits is not None else HubLimits()
        self._log_stream = log
        self._log_queue: list[tuple[float, LogLine]] = []
        #: When (monotonic) the oldest line waiting in the queue must be written.
        self._log_due = 0.0
        self._serving = False
        self.grants = GrantTable(self.limits.grants)
        self.ports = PortTable(self.limits.ports)
        self.store = Xenstored(self.limits.xenstore, on_release=self._domain_released)
        self.xenstore = XenstoreService(self.store, log=self.log)
        self.selector = selectors.DefaultSelector()
        self.clients: dict[int, Client] = {}
        self._client_ids = itertools.count(1)
        #: Domains whose xenstore socket is served, and its path.
        self._xs_domains: dict[int, Path] = {}
        self._listener: socket.socket | None = None
        self._listener_inode: tuple[int, int] | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._started = time.monotonic()
        self._handlers: dict[Op, Callable[[Client, tuple[int, ...]], Outcome]] = {
            Op.HELLO: self._hello,
            Op.GNT_SHARE: self._gnt_share,
            Op.GNT_MAP: self._gnt_map,
            Op.GNT_UNMAP: self._gnt_unmap,
            Op.GNT_SET_NOTIFY: self._gnt_set_notify,
            Op.EVT_BIND_UNBOUND: self._evt_bind_unbound,
            Op.EVT_BIND_INTERDOMAIN: self._evt_bind_interdomain,
            Op.EVT_UNBIND: self._evt_unbind,
            Op.STATE: self._state,
            Op.XS_SOCKET: self._xs_socket,
            Op.INSPECT: self._inspect,
            Op.SHUTDOWN: self._shutdown,
            Op.EVT_STATS: self._evt_stats,
            Op.EVT_STATUS: self._evt_status,
        }

    # -- logging --

    def log(self, line: LogLine) -> None:
        """Log one line, stamped now.  While :meth:`serve` runs, lines wait in memory, as
        they are (a request's line is formatted only when written), for at most
        LOG_DELAY seconds or LOG_BATCH lines: writing costs formatting and a system call
        that a client waiting for its next reply should not pay for, once per request."""
        if not self._log_queue:
            self._log_due = time.monotonic() + LOG_DELAY
        self._log_queue.append((time.time(), line))
        if not self._serving or len(self._log_queue) >= LOG_BATCH:
            self.flush_log()

    def flush_log(self) -> None:
        """Write the lines logged so far."""
        if not self._log_queue:
            return
        parts: list[str] = []
        shown_ms, shown = -1, ""
        for stamp, line in self._log_queue:
            ms = int(stamp * 1000)
            if ms != shown_ms:  # lines of one millisecond share their stamp's text
                moment = datetime.fromtimestamp(stamp)
                shown_ms, shown = ms, moment.isoformat(sep=" ", timespec="milliseconds")
            parts.append(f"{shown} {line}\n")
        self._log_queue.clear()
        text = "".join(parts)
        with contextlib.suppress(OSError, ValueError):
            self._log_stream.write(text)
            self._log_stream.flush()

    # -- sockets --

    def open(self) -> None:
        """Bind the control socket (replacing a dead hub's) and prepare the loop."""
        os.makedirs(self.rundir.xs_dir, mode=0o700, exist_ok=True)
        path = os.fspath(self.rundir.hub)
        listener = listen_unix(path, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        info = os.stat(path)
        self._listener, self._listener_inode = listener, (info.st_dev, info.st_ino)
        self.selector.register(listener, selectors.EVENT_READ, self._accept)
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self.xenstore.attach(self.selector)
        mode = "embedded" if self.embedded else "foreground"
        changed = ", ".join(f"{k}={v}" for k, v in self.limits.changes().items())
        limits = f"; limits {changed}" if changed else ""
        self.log(f"hub pid {os.getpid()} serving {path} ({mode}){limits}")

    def _accept(self, mask: int) -> None:
        assert self._listener is not None
        for _ in range(_REQUESTS_PER_WAKEUP):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.log(f"accept failed: {exc}")
                return
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
            client = Client(sock, next(self._client_ids))
            # The kernel's word for who connected, until HELLO says more.
            client.pid = struct.unpack(
                "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            )[0]
            self.clients[client.id] = client
            self.selector.register(sock, selectors.EVENT_READ, lambda m, c=client: self._read(c))
            self._read(client)  # a client's HELLO usually follows its connect at once

    def ensure_xenstore(self, domid: int) -> Path:
        """Domain ``domid``'s xenstore socket, listening from now on."""
        path = self._xs_domains.get(domid)  # every HELLO asks: the common case is quick
        if path is not None and self.xenstore.serves(domid):
            return path
        if path is not None:
            self.log(f"dom{domid} xenstore socket {path} was replaced: serving it anew")
        path = self.rundir.xs_socket(domid)
        try:
            self.xenstore.listen(domid, path)
        except OSError as exc:
            raise RequestError(
                exc.errno or errno.EEXIST,
                f"cannot serve xenstore socket {path}: {exc.strerror or exc}",
            ) from None
        self._xs_domains[domid] = path
        return path

    # -- requests --

    def _read(self, client: Client) -> None:
        """Serve the requests waiting on ``client``'s socket, then send the replies held
        meanwhile."""
        try:
            self._serve_waiting(client)
        finally:
            self._send_held(client)

    def _serve_waiting(self, client: Client) -> None:
        for _ in range(_REQUESTS_PER_WAKEUP):
            if client.id not in self.clients:
                return
            try:
                data, fds = recv_message(client.sock, REQUEST_MAX, 1)
            except (BlockingIOError, InterruptedError):
                return
            except RequestError as exc:
                self._refuse(client, "request", exc)
                continue
            except OSError as exc:
                self.drop(client, f"receive failed: {exc}")
                return
            for fd in fds:  # requests carry no descriptors; don't keep strays
                os.close(fd)
            if not data and not fds:
                self.drop(client, "connection closed")
                return
            self._serve(client, data)

    def _serve(self, client: Client, data: bytes) -> None:
        op_name = "request"
        try:
            op, args = decode_request(data)
            op_name = op.name
            if client.domid is None and op is not Op.HELLO:
                raise RequestError(errno.EPROTO, f"{op.name} before HELLO")
            outcome = self._handlers[op](client, args)
        except RequestError as exc:
            self._refuse(client, op_name, exc, logged=op_name not in _UNLOGGED_REFUSALS)
            return
        except Exception:  # a bug must cost one request, not every client's hub
            self.log(f"{client.who} {op_name} crashed:\n{traceback.format_exc().rstrip()}")
            self._reply(client, encode_error(errno.EIO, f"internal hub error in {op_name}"))
            return
        # Reply first, log after: the client is waiting, the log is not.
        self._reply(client, encode_reply(outcome.values, outcome.text), outcome.fds)
        if outcome.note:
            self.log(f"{client.who} {op_name} {outcome.note}")

    def _refuse(self, client: Client, op_name: str, exc: RequestError, logged: bool = True) -> None:
        """Answer with the error; a client that has not said a valid HELLO is dropped."""
        self._reply(client, encode_error(exc.err, exc.message))
        name = errno.errorcode.get(exc.err, str(exc.err))
        if logged:
            self.log(f"{client.who} {op_name} -> {name}: {exc.message}")
        if client.domid is None:
            self.drop(client, "no valid HELLO")

    def _reply(self, client: Client, data: bytes, fds: tuple[int, ...] = ()) -> None:
        """Answer ``client``.  A reply without descriptors is held until the requests the
        client sent together are all served (see :meth:`_read`): replies then go out back
        to back, and the client wakes up once for them, not once each.  A reply with
        descriptors is sent at once, since a later request may close them."""
        if fds:
            self._send_held(client)
            self._send(client, data, fds)
        else:
            client.held.append(data)

    def _send_held(self, client: Client) -> None:
        held, client.held = client.held, []
        for data in held:
            self._send(client, data)

    def _send(self, client: Client, data: bytes, fds: tuple[int, ...] = ()) -> None:
        if client.id not in self.clients:
            return
        try:
            send_message(client.sock, data, fds)
        except BlockingIOError:
            self.drop(client, "not reading its replies")
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE and not fds:
                self._send(
                    client,
                    encode_error(
                        errno.E2BIG, f"reply of {len(data)} bytes is too large for one message"
                    ),
                )
            else:
                self.drop(client, f"send failed: {exc}")

    def drop(self, client: Client, reason: str) -> None:
        """End a connection: fire its unmap-notifies, then release its grants and ports."""
        if client.id not in self.clients:
            return
        with contextlib.suppress(OSError):  # e.g. the error that refused its HELLO
            for data in client.held:
                send_message(client.sock, data)
        client.held.clear()
        del self.clients[client.id]
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(client.sock)
        _close_read_side_first(client.sock)
        released = []
        for number, handle in sorted(client.handles.items()):
            fired = self._release_safely(client, f"handle {number}", self.grants.release, handle)
            released.append(f"handle {number}" + (f" ({fired})" if fired else ""))
        for number, port in sorted(client.ports.items()):
            self._release_safely(client, f"port {number}", self.ports.unbind, port)
        ports = ", ".join(f"port {n}" for n in sorted(client.ports))
        client.handles.clear()
        client.ports.clear()
        summary = "; ".join(part for part in (", ".join(released), ports) if part)
        self.log(f"{client.who} gone ({reason})" + (f": released {summary}" if summary else ""))

    def _release_safely(
        self, client: Client, what: str, release: Callable[[Any], str | None], item: Any
    ) -> str | None:
        """Release one resource of a departing client; a failure is logged, not fatal,
        so the client's other resources are still released and the hub keeps serving."""
        try:
            return release(item)
        except RequestError as exc:  # every step ran; some failed, as it says
            self.log(f"{client.who} releasing {what}: {exc.message}")
            return None
        except Exception:
            self.log(f"{client.who} releasing {what} failed:\n{traceback.format_exc().rstrip()}")
            return None

    # -- operations --

    def _hello(self, client: Client, args: tuple[int, ...]) -> Outcome:
        version, domid, pid, flags = args
        if client.domid is not None:
            raise RequestError(errno.EPROTO, "HELLO sent twice on one connection")
        if version != VERSION:
            raise RequestError(errno.EPROTO, f"protocol version {version} unknown (hub: {VERSION})")
        _check_domid(domid, "domain id")
        _check_flags(flags, HELLO_STRICT, "HELLO")
        self.ensure_xenstore(domid)
        client.domid, client.pid, client.strict = domid, pid, bool(flags & HELLO_STRICT)
        return Outcome((os.getpid(),), note="strict" if client.strict else "")

    def _refuse_loopback(self, client: Client, peer: int) -> None:
        if client.strict and peer == client.domid:
            raise RequestError(
                errno.EPERM,
                f"loopback grant (domain {peer} to itself) refused in strict mode, as on Xen",
            )

    def _gnt_share(self, client: Client, args: tuple[int, ...]) -> Outcome:
        peer, count, flags, *notify = args
        _check_domid(peer, "peer domain")
        check_page_count(count)
        writable = bool(_check_flags(flags, _GNT_FLAGS, "GNT_SHARE") & GNT_WRITABLE)
        self._refuse_loopback(client, peer)
        assert client.domid is not None
        handle = self._notified(
            client, self.grants.share(client.domid, peer, count, writable), notify
        )
        number = client.add_handle(handle)
        access = "rw" if writable else "ro"
        return Outcome(
            (number, count, *handle.refs),
            fds=(handle.objects[0].fd,),
            note=f"to dom{peer} {count} page(s) {access} -> handle {number} refs {handle.refs}"
            + _notify_note(notify),
        )

    def _gnt_map(self, client: Client, args: tuple[int, ...]) -> Outcome:
        peer, flags, count, *rest = args
        refs, notify = rest[:count], rest[count:]
        _check_domid(peer, "peer domain")
        check_page_count(count)
        writable = bool(_check_flags(flags, _GNT_FLAGS, "GNT_MAP") & GNT_WRITABLE)
        self._refuse_loopback(client, peer)
        assert client.domid is not None
        handle = self.grants.map(client.domid, peer, tuple(refs), writable)
        if len(handle.objects) > MAX_FDS:
            self.grants.release(handle)
            raise RequestError(
                errno.EINVAL, f"refs span {len(handle.objects)} shared objects; at most {MAX_FDS}"
            )
        handle = self._notified(client, handle, notify)
        index = {obj: i for i, obj in enumerate(handle.objects)}
        layout = [n for grant in handle.grants for n in (index[grant.pages], grant.page)]
        fds = tuple(obj.fd if writable else obj.ro_fd for obj in handle.objects)
        number = client.add_handle(handle)
        access = "rw" if writable else "ro"
        return Outcome(
            (number, len(fds), *layout),
            fds=fds,
            note=f"from dom{peer} refs {refs} {access} -> handle {number}" + _notify_note(notify),
        )

    def _notified(self, client: Client, handle: GrantHandle, notify: list[int]) -> GrantHandle:
        """``handle`` with the unmap-notify ``notify`` (offset, port; empty without
        GNT_NOTIFY) set; if that is refused, the handle is released: nothing was shared
        or mapped."""
        if notify:
            try:
                self._set_notify(client, handle, *notify)
            except RequestError:
                self.grants.release(handle)
                raise
        return handle

    def _set_notify(self, client: Client, handle: GrantHandle, offset: int, port: int) -> None:
        assert client.domid is not None
        handle.set_notify(offset, self.ports.lookup(client.domid, port))

    def _gnt_unmap(self, client: Client, args: tuple[int, ...]) -> Outcome:
        (number,) = args
        handle = client.handle(number)
        del client.handles[number]
        fired = self.grants.release(handle)
        return Outcome(
            note=f"handle {number} {handle.kind} refs {handle.refs}"
            + (f": {fired}" if fired else "")
        )

    def _gnt_set_notify(self, client: Client, args: tuple[int, ...]) -> Outcome:
        number, offset, port_number = args
        self._set_notify(client, client.handle(number), offset, port_number)
        return Outcome(note=f"handle {number} byte {offset} port {port_number}")

    def _bound(self, client: Client, port: Port, what: str) -> Outcome:
        client.ports[port.number] = port
        return Outcome(
            (port.number, port.bell.side),
            fds=(port.bell.incoming, port.bell.outgoing, port.bell.pair.stats_fd),
            note=f"{what} -> port {port.number}",
        )

    def _evt_bind_unbound(self, client: Client, args: tuple[int, ...]) -> Outcome:
        (remote,) = args
        _check_domid(remote, "remote domain")
        assert client.domid is not None
        port = self.ports.bind_unbound(client.domid, remote, client.id)
        return self._bound(client, port, f"for dom{remote}")

    def _evt_bind_interdomain(self, client: Client, args: tuple[int, ...]) -> Outcome:
        remote, remote_port = args
        _check_domid(remote, "remote domain")
        assert client.domid is not None
        port = self.ports.bind_interdomain(client.domid, remote, remote_port, client.id)
        return self._bound(client, port, f"to dom{remote} port {remote_port}")

    def _evt_unbind(self, client: Client, args: tuple[int, ...]) -> Outcome:
        (number,) = args
        port = client.ports.pop(number, None)
        if port is None and number in client.closed_ports:
            client.closed_ports.discard(number)
            return Outcome(note=f"port {number} (closed when its domain was destroyed)")
        if port is None:
            raise RequestError(errno.EINVAL, f"port {number} is not bound on this connection")
        self.ports.unbind(port)
        return Outcome(note=f"port {number}")

    def _domain_released(self, domid: int) -> None:
        """The toolstack destroyed ``domid`` (xenstored's RELEASE): close every port of
        it, as Xen closes a dying domain's event channels, so each peer's end reads
        "unbound" -- which is how libvchan-xen's ``libvchan_is_open()`` notices.  As on
        Xen, no event is sent.  Its processes, which the emulator cannot stop, keep their
        connections; their grants stay, as pages stay mapped by their peers on Xen."""
        closed = []
        for client in self.clients.values():
            if client.domid != domid:
                continue
            for number, port in sorted(client.ports.items()):
                self.ports.unbind(port)
                client.closed_ports.add(number)
                closed.append(f"port {number}")
            client.ports.clear()
        self.log(f"dom{domid} destroyed" + (f": closed {', '.join(closed)}" if closed else ""))

    def _state(self, client: Client, args: tuple[int, ...]) -> Outcome:
        return Outcome(text=json.dumps(self.state(client), separators=(",", ":")))

    def state(self, asker: Client | None = None) -> dict[str, object]:
        """Everything the hub holds, for STATE (leak checks, the TUI, people debugging)."""
        domains = (
            self.grants.domains()
            | self.ports.domains()
            | self._xs_domains.keys()
            | {c.domid for c in self.clients.values() if c.domid is not None}
        )
        nodes = {}
        for path in self.store.paths():
            node = self.store.node(path)
            nodes[path] = node.value.decode("utf-8", "replace") if node is not None else ""
        return {
            "hub": {
                "pid": os.getpid(),
                "rundir": os.fspath(self.rundir.path),
                "embedded": self.embedded,
                "uptime": round(time.monotonic() - self._started, 3),
                "limits": self.limits.as_dict(),
            },
            "you": asker.id if asker is not None else None,
            "domains": sorted(domains),
            "connections": [c.describe() for _, c in sorted(self.clients.items())],
            "grants": self.grants.snapshot(),
            "ports": self.ports.snapshot(),
            "xenstore": {
                "connections": self.xenstore.connection_count(),
                "sockets": sorted(self._xs_domains),
                "nodes": nodes,
            },
        }

    def _xs_socket(self, client: Client, args: tuple[int, ...]) -> Outcome:
        (domid,) = args
        path = self.ensure_xenstore(_check_domid(domid, "domain id"))
        return Outcome(text=os.fspath(path))

    def _inspect(self, client: Client, args: tuple[int, ...]) -> Outcome:
        domid, ref = args
        grant = self.grants.lookup(domid, ref)
        return Outcome((grant.page,), fds=(grant.pages.ro_fd,), note=f"dom{domid} ref {ref}")

    def _evt_stats(self, client: Client, args: tuple[int, ...]) -> Outcome:
        domid, number = args
        port = self.ports.lookup(domid, number)
        return Outcome(
            (port.bell.side,), fds=(port.bell.pair.stats_ro_fd,), note=f"dom{domid} port {number}"
        )

    def _evt_status(self, client: Client, args: tuple[int, ...]) -> Outcome:
        """EVTCHNOP_status, in Xen's order of checks: the domain must exist (ESRCH), an
        unprivileged caller may ask only about itself (EPERM), the port must be valid
        (EINVAL).  Not logged: libvchan-xen asks on every ``libvchan_is_open()``."""
        domid, number = args
        assert client.domid is not None
        if domid == DOMID_SELF:
            domid = client.domid
        if domid > DOMID_MAX or not self.store.is_introduced(domid):
            raise RequestError(errno.ESRCH, f"domain {domid} does not exist")
        if client.domid != PRIVILEGED_DOMID and domid != client.domid:
            raise RequestError(
                errno.EPERM,
                f"domain {client.domid} may not ask about domain {domid}'s ports (only dom0 may)",
            )
        return Outcome(self.ports.status(domid, number))

    def _shutdown(self, client: Client, args: tuple[int, ...]) -> Outcome:
        self._stopping = True
        return Outcome(note="requested")

    # -- the loop --

    def stop(self) -> None:
        """Make :meth:`serve` return soon; safe from signal handlers."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    @contextlib.contextmanager
    def stopped_by_signals(self) -> Iterator[None]:
        """While inside, SIGTERM and SIGINT stop the loop instead of killing the process.

        The wakeup fd makes the signal interrupt ``select`` at once; the handler alone
        would only run after ``select`` timed out.
        """
        previous = {sig: signal.signal(sig, lambda *_: self.stop()) for sig in _STOP_SIGNALS}
        wakeup = signal.set_wakeup_fd(self._wake_w.fileno())
        try:
            yield
        finally:
            signal.set_wakeup_fd(wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_wake(self, mask: int) -> None:
        with contextlib.suppress(OSError):
            self._wake_r.recv(64)

    def busy(self) -> bool:
        """Whether any socket of the hub has a connection, or the toolstack has created
        domains (an embedded hub leaving would take them with it)."""
        return (
            bool(self.clients)
            or self.xenstore.connection_count() > 0
            or bool(self.store.created_domains())
        )

    def serve(self) -> str:
        """Run until stopped or (embedded) idle; return why it stopped."""
        self._serving = True
        try:
            return self._loop()
        finally:
            self._serving = False
            self.flush_log()

    def _loop(self) -> str:
        idle_since: float | None = None
        while not self._stopping:
            timeout = None
            if self.embedded and not self.busy():
                idle_since = idle_since if idle_since is not None else time.monotonic()
                timeout = self.idle - (time.monotonic() - idle_since)
                if timeout <= 0:
                    return f"idle for {self.idle:g} s"
            else:
                idle_since = None
            if self._log_queue:
                due = self._log_due - time.monotonic()
                if due <= 0:
                    self.flush_log()
                else:
                    timeout = due if timeout is None else min(timeout, due)
            for key, mask in self.selector.select(timeout):
                key.data(mask)
        return "asked to stop"

    def close(self) -> None:
        """Close every socket and remove the socket files that are still ours.

        Mappings held by clients are not notified: the hub going away is the hypervisor
        going away, not the peers (docs/hub-protocol.md, "Life of the hub").
        """
        for client in list(self.clients.values()):
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(client.sock)
            client.sock.close()
        self.clients.clear()
        if self._listener is not None:
            self._unlink_if_ours(self.rundir.hub, self._listener_inode)
            self.selector.unregister(self._listener)
            self._listener.close()
            self._listener = None
        self.xenstore.close()
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()

    @staticmethod
    def _unlink_if_ours(path: Path, inode: tuple[int, int] | None) -> None:
        with contextlib.suppress(FileNotFoundError):
            info = os.lstat(path)
            if (info.st_dev, info.st_ino) == inode:
                os.unlink(path)


def run_hub(
    rundir: RunDir,
    *,
    embedded: bool = False,
    idle: float = DEFAULT_IDLE,
    ready_fd: int | None = None,
    on_ready: Callable[[], None] | None = None,
    limits: HubLimits | None = None,
    log: TextIO = sys.stderr,
) -> int:
    """Serve ``rundir`` until SIGTERM/SIGINT, SHUTDOWN or (embedded) idleness.

    Once the sockets are bound it calls ``on_ready`` and writes the hub's pid and a
    newline to ``ready_fd`` (then closes it): that is what :func:`~.launcher.ensure_hub`
    waits for.  Returns the exit status.
    """
    hub = Hub(rundir, embedded=embedded, idle=idle, limits=limits, log=log)
    try:
        hub.open()
    except OSError as exc:
        hub.log(f"cannot start: {exc}")
        hub.close()
        return 1
    try:
        with hub.stopped_by_signals():
            if on_ready is not None:
                on_ready()
            if ready_fd is not None:
                os.write(ready_fd, f"{os.getpid()}\n".encode())
                os.close(ready_fd)
            reason = hub.serve()
        hub.log(f"hub pid {os.getpid()} exiting: {reason}")
    finally:
        hub.close()
    return 0


def _close_read_side_first(sock: socket.socket) -> None:
    """Close a client's socket without losing the replies already sent to it.

    Linux reports ECONNRESET to the peer of a stream or seqpacket socket closed with
    requests still unread, and the peer's next receive returns that error ahead of the
    replies waiting for it -- a client that sent a request behind a refused HELLO would
    lose the refusal's reason.  Shutting the read side first makes the client's later
    sends fail (EPIPE), so the requests already queued can be discarded and the close
    leaves the client its replies followed by end-of-file.
    """
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
        sock.setblocking(False)
        while sock.recv(1, socket.MSG_TRUNC):
            pass
    sock.close()
