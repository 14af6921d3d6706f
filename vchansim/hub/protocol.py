"""The hub's control protocol (docs/hub-protocol.md), written once for both ends.

Requests and replies are single SOCK_SEQPACKET messages of little-endian u32s, so a
message boundary is a request boundary and no parser state survives a bad client.  File
descriptors ride along as SCM_RIGHTS.  The hub (:mod:`.server`), the ``shm`` backend and
the leak checker all speak through the helpers here; the C drop-in libraries implement
the same table from the document.

The helpers use the ``_socket`` extension, which ``socket`` wraps (its sockets are
``_socket.socket`` too, so the hub passes its own): importing ``socket`` builds enums of
every constant, a few milliseconds of an endpoint's start that it never uses.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

from ..errors import BackendError, ConfigError, VchanError
from ..xen import MAX_GRANT_PAGES, RequestError


class Op(IntEnum):
    """Operation numbers (the first u32 of every request)."""

    HELLO = 1
    GNT_SHARE = 2
    GNT_MAP = 3
    GNT_UNMAP = 4
    GNT_SET_NOTIFY = 5
    EVT_BIND_UNBOUND = 6
    EVT_BIND_INTERDOMAIN = 7
    EVT_UNBIND = 8
    STATE = 9
    XS_SOCKET = 10
    INSPECT = 11
    SHUTDOWN = 12
    EVT_STATS = 13
    EVT_STATUS = 14


VERSION = 1
#: HELLO flag: refuse loopback grants, as Xen and Qubes do.
HELLO_STRICT = 0x1
#: GNT_SHARE / GNT_MAP flag: read-write.
GNT_WRITABLE = 0x1
#: GNT_SHARE / GNT_MAP flag: two more arguments, byte offset and port, set the handle's
#: unmap-notify in the same request.
GNT_NOTIFY = 0x2
#: The kernel passes at most this many descriptors in one message (SCM_MAX_FD).
MAX_FDS = 253

#: Fixed argument counts; GNT_MAP adds ``count`` refs to its 3, and GNT_SHARE and GNT_MAP
#: with GNT_NOTIFY add 2.
ARG_COUNTS = {
    Op.HELLO: 4,
    Op.GNT_SHARE: 3,
    Op.GNT_MAP: 3,
    Op.GNT_UNMAP: 1,
    Op.GNT_SET_NOTIFY: 3,
    Op.EVT_BIND_UNBOUND: 1,
    Op.EVT_BIND_INTERDOMAIN: 2,
    Op.EVT_UNBIND: 1,
    Op.STATE: 0,
    Op.XS_SOCKET: 1,
    Op.INSPECT: 2,
    Op.SHUTDOWN: 0,
    Op.EVT_STATS: 2,
    Op.EVT_STATUS: 2,
}
#: Where the flags are among the arguments of the ops that take GNT_NOTIFY.
_FLAGS_AT = {Op.GNT_SHARE: 2, Op.GNT_MAP: 1}
#: Replies whose payload after ``status`` is text rather than u32s.
TEXT_REPLIES = frozenset({Op.STATE, Op.XS_SOCKET})

REQUEST_MAX = 4 * (4 + MAX_GRANT_PAGES) + 64
REPLY_MAX = 4 * (3 + 2 * MAX_GRANT_PAGES) + 1024
STATE_REPLY_MAX = 1 << 20
#: Seconds a client waits for a reply before declaring the hub hung.
CALL_TIMEOUT = 10.0
#: ``struct timeval`` (seconds, microseconds), for SO_SNDTIMEO and SO_RCVTIMEO.
_TIMEVAL = struct.Struct("@ll")
#: The flags of every receive, and those that say a message did not fit, as plain ints
#: (operators on the enum flags cost more than the system call).
_RECV_FLAGS = _socket.MSG_CMSG_CLOEXEC
_TRUNCATED = _socket.MSG_TRUNC | _socket.MSG_CTRUNC
#: A file descriptor in SCM_RIGHTS data (a C int).
_FD = struct.Struct("i")


class HubGoneError(BackendError):
    """The hub closed our connection: it exited, was killed, or dropped a bad client."""

    default_errno = errno.ECONNRESET


def pack_u32s(*values: int) -> bytes:
    """Little-endian u32s; refuses values that do not fit rather than wrapping them."""
    try:
        return struct.pack(f"<{len(values)}I", *values)
    except struct.error:
        raise RequestError(errno.EINVAL, f"value out of u32 range in {values!r}") from None


def unpack_u32s(data: bytes) -> tuple[int, ...]:
    """Split ``data`` into u32s; its length must be a multiple of 4."""
    if len(data) % 4:
        raise RequestError(errno.EPROTO, f"message of {len(data)} bytes is not whole u32s")
    return struct.unpack(f"<{len(data) // 4}I", data)


def encode_request(op: Op, *args: int) -> bytes:
    """One request message."""
    return pack_u32s(op, *args)


def decode_request(data: bytes) -> tuple[Op, tuple[int, ...]]:
    """Split a request into its op and arguments, checking the op and argument count."""
    if len(data) < 4:
        raise RequestError(errno.EPROTO, f"request of {len(data)} bytes is shorter than an op")
    words = unpack_u32s(data)
    try:
        op = Op(words[0])
    except ValueError:
        raise RequestError(errno.EINVAL, f"unknown op {words[0]}") from None
    args = words[1:]
    expected = ARG_COUNTS[op]
    if op is Op.GNT_MAP and len(args) >= expected:
        expected += args[2]
    flags_at = _FLAGS_AT.get(op)
    if flags_at is not None and len(args) > flags_at and args[flags_at] & GNT_NOTIFY:
        expected += 2
    if len(args) != expected:
        raise RequestError(
            errno.EINVAL, f"{op.name} takes {expected} arguments, the request has {len(args)}"
        )
    return op, args


def encode_reply(values: tuple[int, ...] = (), text: str = "") -> bytes:
    """A successful reply: status 0, then u32 values or text."""
    return pack_u32s(0, *values) + text.encode()


def encode_error(err: int, message: str) -> bytes:
    """An error reply: the errno, then a UTF-8 message naming the cause."""
    return pack_u32s(err) + message.encode()


@dataclass
class Reply:
    """A decoded reply.  ``fds`` belong to the caller, who must close them."""

    status: int
    values: tuple[int, ...] = ()
    text: str = ""
    fds: list[int] = field(default_factory=list)

    def close_fds(self) -> None:
        """Close every descriptor that came with the reply."""
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


def decode_reply(op: Op, data: bytes, fds: list[int]) -> Reply:
    """Interpret a reply to ``op``: errors and text replies carry text after the status."""
    if len(data) < 4:
        for fd in fds:
            os.close(fd)
        raise BackendError(f"hub sent a {len(data)}-byte reply to {op.name}", err=errno.EPROTO)
    (status,) = struct.unpack_from("<I", data)
    payload = data[4:]
    if status or op in TEXT_REPLIES:
        return Reply(status, text=payload.decode("utf-8", "replace"), fds=fds)
    return Reply(status, values=unpack_u32s(payload), fds=fds)


def send_message(
    sock: _socket.socket, data: bytes, fds: list[int] | tuple[int, ...] = ()
) -> None:
    """Send one message, with ``fds`` as SCM_RIGHTS if any."""
    if fds:
        rights = struct.pack(f"{len(fds)}i", *fds)
        sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
    else:
        sock.send(data)


def recv_message(sock: _socket.socket, bufsize: int, maxfds: int = 0) -> tuple[bytes, list[int]]:
    """Receive one message and its descriptors (close-on-exec).

    A message longer than ``bufsize`` or with more descriptors than ``maxfds`` is a
    protocol violation: the descriptors that did arrive are closed and EPROTO raised, so a
    misbehaving peer cannot make us leak them.
    """
    room = _socket.CMSG_LEN(maxfds * _FD.size)
    data, ancillary, flags, _ = sock.recvmsg(bufsize, room, _RECV_FLAGS)
    fds = [
        fd
        for level, kind, rights in ancillary
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS
        for (fd,) in _FD.iter_unpack(rights[: len(rights) - len(rights) % _FD.size])
    ]
    if flags & _TRUNCATED:
        for fd in fds:
            os.close(fd)
        raise RequestError(
            errno.EPROTO,
            f"message truncated (over {bufsize} bytes or over {maxfds} descriptors)",
        )
    return data, fds


#: Opens a socket to the hub (see :func:`dial`).
Dial = Callable[[], _socket.socket]


def dial(path: Path) -> _socket.socket:
    """A socket connected to the hub socket at ``path``; FileNotFoundError or
    ConnectionRefusedError when no hub listens there.

    The socket stays blocking, its calls bounded by ``SO_SNDTIMEO``/``SO_RCVTIMEO``
    (the call timeout), as the C clients do: each send and receive is then one system
    call, where Python's ``settimeout`` polls before each.  The connect blocks too: when
    many ends start at once the hub's backlog can be full for a moment, and a blocking
    connect waits for room where one under ``settimeout`` fails at once with EAGAIN.
    """
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        bound = _TIMEVAL.pack(int(CALL_TIMEOUT), int(CALL_TIMEOUT % 1 * 1e6))
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, bound)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVTIMEO, bound)
        try:
            sock.connect(os.fspath(path))
        except BlockingIOError:
            raise BackendError(
                f"the hub at {path} accepted no connection within {CALL_TIMEOUT:g} s "
                "(its backlog stayed full)",
                err=errno.ETIMEDOUT,
            ) from None
    except BaseException:
        sock.close()
        raise
    return sock


def _io_failure(op: Op, exc: OSError) -> BackendError:
    """What a socket error during ``op`` means to the caller (EAGAIN: a socket timeout
    ran out, see :func:`dial`)."""
    if isinstance(exc, (TimeoutError, BlockingIOError)):
        return BackendError(
            f"the hub did not answer {op.name} within {CALL_TIMEOUT:g} s", err=errno.ETIMEDOUT
        )
    if isinstance(exc, ConnectionError):
        return HubGoneError(f"lost the hub connection during {op.name}: {exc}")
    # e.g. the handle was already closed
    return BackendError(f"hub connection unusable for {op.name}: {exc.strerror}", err=exc.errno)


class HubConnection:
    """One client connection to the hub -- a handle, like an open gntalloc or evtchn file.

    Everything the hub allocates through a connection is released when it closes (or
    this process dies).  Calls are serialised by a lock so a handle may be shared between
    threads; the data path never goes through here.
    """

    def __init__(self, sock: _socket.socket, hub_pid: int) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._hub_pid = hub_pid
        #: HELLO, while its reply is still to be read (see :meth:`greet`).
        self._hello: bytes | None = None
        self._dial: Dial | None = None
        self._redials = 0

    @classmethod
    def connect(cls, path: Path, domid: int, *, strict: bool = False) -> HubConnection:
        """Connect to the hub socket at ``path``, introduce ourselves as ``domid`` and wait
        for the hub's answer.

        Raises FileNotFoundError / ConnectionRefusedError when no hub listens there, and
        HubGoneError if it closes on us during HELLO (it was exiting).
        """
        conn = cls.greet(lambda: dial(path), domid, strict=strict)
        try:
            conn._await_hello()
        except BaseException:
            conn.close()
            raise
        return conn

    @classmethod
    def greet(
        cls, dial: Dial, domid: int, *, strict: bool = False, redials: int = 0
    ) -> HubConnection:
        """Connect with ``dial`` and send HELLO as ``domid``, without waiting for the reply.

        The hub answers a connection's requests in order, so the first :meth:`call` (or
        :attr:`hub_pid`) reads HELLO's reply just before its own: introducing ourselves
        costs no round trip of its own.  A refused HELLO raises BackendError from that
        call.  A hub that closes the connection before answering HELLO was exiting and did
        nothing for us, so the call dials again -- at most ``redials`` times -- and
        repeats HELLO and itself.
        """
        hello = encode_request(Op.HELLO, VERSION, domid, os.getpid(), HELLO_STRICT if strict else 0)
        conn = cls(dial(), hub_pid=0)
        conn._hello, conn._dial, conn._redials = hello, dial, redials
        try:
            with contextlib.suppress(HubGoneError):  # the first call finds out, and redials
                conn._send(hello, Op.HELLO)
        except BaseException:
            conn.close()
            raise
        return conn

    @property
    def hub_pid(self) -> int:
        """The hub's process id, as its answer to HELLO gave it."""
        self._await_hello()
        return self._hub_pid

    def _await_hello(self) -> None:
        with self._lock:
            if self._hello is not None:
                self._finish_hello(None, Op.HELLO)

    def call(self, op: Op, *args: int, error: type[VchanError] = BackendError) -> Reply:
        """Send one request and return its reply; an error status raises ``error``."""
        try:
            request = encode_request(op, *args)
        except RequestError as exc:
            raise ConfigError(f"{op.name}: {exc.message}") from None
        bufsize = STATE_REPLY_MAX if op is Op.STATE else REPLY_MAX
        with self._lock:
            if self._hello is not None:
                self._finish_hello(request, op)
            else:
                self._send(request, op)
            data, fds = self._receive(op, bufsize)
        reply = decode_reply(op, data, fds)
        if reply.status:
            reply.close_fds()
            raise error(f"{op.name}: {reply.text}", err=reply.status)
        return reply

    def _finish_hello(self, request: bytes | None, op: Op) -> None:
        """Send ``request`` (for ``op``), if any, behind the pending HELLO and read HELLO's
        reply, dialling again while the hub drops us unanswered (see :meth:`greet`)."""
        assert self._hello is not None and self._dial is not None
        unsent: HubGoneError | None = None
        for attempt in range(self._redials + 1):
            try:
                if attempt:
                    self._sock.close()
                    self._sock = self._dial()
                    self._send(self._hello, Op.HELLO)
                unsent = self._send_behind_hello(request, op)
                data, fds = self._receive(Op.HELLO, REPLY_MAX)
                break
            except HubGoneError:
                if attempt == self._redials:
                    raise
        self._hello = None
        reply = decode_reply(Op.HELLO, data, fds)
        if reply.status:
            reply.close_fds()
            raise BackendError(f"HELLO: {reply.text}", err=reply.status)
        (self._hub_pid,) = reply.values
        if unsent is not None:
            raise unsent

    def _send_behind_hello(self, request: bytes | None, op: Op) -> HubGoneError | None:
        """Send ``request`` behind HELLO; a hub that refused HELLO may already have
        stopped reading (its sends then fail), and HELLO's reply -- the reason -- still
        waits to be read, so the failure is returned for after that reply."""
        if request is None:
            return None
        try:
            self._send(request, op)
        except HubGoneError as exc:
            return exc
        return None

    def _send(self, request: bytes, op: Op) -> None:
        try:
            send_message(self._sock, request)
        except OSError as exc:
            raise _io_failure(op, exc) from None

    def _receive(self, op: Op, bufsize: int) -> tuple[bytes, list[int]]:
        try:
            data, fds = recv_message(self._sock, bufsize, MAX_FDS)
        except OSError as exc:
            raise _io_failure(op, exc) from None
        except RequestError as exc:
            raise BackendError(f"bad reply to {op.name}: {exc.message}", err=exc.err) from None
        if not data and not fds:
            raise HubGoneError(f"the hub closed the connection during {op.name}")
        return data, fds

    def close(self) -> None:
        """Close the connection; the hub releases everything it holds for us."""
        self._sock.close()

    def __enter__(self) -> HubConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
