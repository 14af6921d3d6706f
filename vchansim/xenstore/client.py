"""A small synchronous XenStore client, speaking the wire protocol over a socket or a device.

It is what the Python backends use: the shm backend connects to its domain's socket on
the emulated daemon, a Xen backend to the real ``xenstored`` socket or to
``/dev/xen/xenbus``.  Like libxenstore it keeps one request outstanding (req_id 0), and
watch events that arrive while it waits for a reply are queued for :meth:`read_watch`.
Not thread-safe: use one client per thread.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import stat
import time
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Protocol

from ..errors import StoreError
from . import wire
from .wire import Message, Perm, XsType


class XenstoreError(StoreError):
    """The daemon (or the client itself) refused an operation.

    ``errno_name`` is the name xenstored sent (``ENOENT``, ``EAGAIN``...), ``errno`` the
    matching number and ``filename`` the path concerned, if any.
    """

    def __init__(self, errno_name: str, path: str | None = None) -> None:
        number = wire.ERRNO_BY_NAME.get(errno_name) or getattr(errno, errno_name, errno.EINVAL)
        detail = f"{errno_name} ({os.strerror(number)})"
        super().__init__(f"{detail}: {path}" if path else detail, err=number)
        self.errno_name = errno_name
        self.filename = path


class _PermLike(Protocol):
    """Anything with a permission letter and a domain id (wire.Perm, backends.base.Perm)."""

    @property
    def access(self) -> str: ...

    @property
    def domid(self) -> int: ...


class _Transport:
    """Reads and writes whole buffers on a file descriptor, with an optional deadline."""

    def __init__(self, fd: int, sock: socket.socket | None) -> None:
        self.fd = fd
        self.sock = sock

    def write(self, data: bytes) -> None:
        """Send a whole message; on ``/dev/xen/xenbus`` in one write() call, which is how
        the kernel wants messages (it buffers until a message is complete)."""
        view = memoryview(data)
        while view:
            sent = os.write(self.fd, view)
            view = view[sent:]

    def read_exact(self, count: int, deadline: float | None) -> bytes | None:
        """``count`` bytes, or None if the deadline passes before the first one arrives.
        Once a message has started we wait for all of it."""
        chunks: list[bytes] = []
        missing = count
        while missing:
            timeout = None if deadline is None or chunks else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self.fd, missing)
            if not chunk:
                raise ConnectionResetError(errno.ECONNRESET, "xenstore connection closed")
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        else:
            os.close(self.fd)


class XsClient:
    """A XenStore connection.  ``transport`` is a connected socket or an open file
    descriptor (e.g. of ``/dev/xen/xenbus``); the client owns and closes it.

    Paths not starting with ``/`` are relative to the domain's home.  ``tx`` 0 means no
    transaction.  Errors raise :class:`XenstoreError`.
    """

    def __init__(self, transport: socket.socket | int) -> None:
        if isinstance(transport, socket.socket):
            transport.setblocking(True)
            self._io = _Transport(transport.fileno(), transport)
        else:
            self._io = _Transport(transport, None)
        self._events: deque[tuple[str, str]] = deque()
        self._closed = False

    @classmethod
    def connect(cls, path: str | os.PathLike[str]) -> XsClient:
        """Open ``path`` the way libxenstore does: connect if it is a socket, else open it
        as a device (``/dev/xen/xenbus``)."""
        path = os.fspath(path)
        if stat.S_ISSOCK(os.stat(path).st_mode):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                raise
            return cls(sock)
        return cls(os.open(path, os.O_RDWR | os.O_CLOEXEC))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._io.close()

    def __enter__(self) -> XsClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def fileno(self) -> int:
        """Readable when a watch event (or stray data) is waiting on the connection."""
        return self._io.fd

    # -- the protocol --

    def request(
        self, msg_type: XsType, payload: bytes, tx: int = 0, path: str | None = None
    ) -> bytes:
        """Send one request and return the reply payload, queueing watch events met on the
        way.  An ERROR reply raises XenstoreError naming ``path``."""
        if len(payload) > wire.PAYLOAD_MAX:
            raise XenstoreError("E2BIG", path)
        self._io.write(Message(msg_type, payload, 0, tx).encode())
        while True:
            reply = self._receive(None)
            assert reply is not None  # no deadline
            if reply.type == XsType.WATCH_EVENT:
                self._queue_event(reply.payload)
            elif reply.type == XsType.ERROR:
                raise XenstoreError(reply.payload.rstrip(b"\0").decode("latin-1"), path)
            elif reply.type == msg_type:
                return reply.payload
            else:  # libxenstore gives up on such a connection the same way
                raise XenstoreError("EBADF", path)

    def _receive(self, deadline: float | None) -> Message | None:
        header = self._io.read_exact(wire.HEADER_SIZE, deadline)
        if header is None:
            return None
        msg_type, req_id, tx_id, length = wire.decode_header(header)
        if length > wire.PAYLOAD_MAX:
            raise XenstoreError("E2BIG")
        payload = self._io.read_exact(length, None) if length else b""
        assert payload is not None
        return Message(msg_type, payload, req_id, tx_id)

    def _queue_event(self, payload: bytes) -> None:
        fields = wire.split_strings(payload)
        if len(fields) >= 2:
            self._events.append((fields[0].decode("latin-1"), fields[1].decode("latin-1")))

    def _call(self, msg_type: XsType, path: str, tx: int, extra: bytes = b"") -> bytes:
        return self.request(msg_type, path.encode() + b"\0" + extra, tx, path)

    # -- operations --

    def read(self, path: str, tx: int = 0) -> bytes:
        return self._call(XsType.READ, path, tx)

    def write(self, path: str, value: bytes | str, tx: int = 0) -> None:
        data = value.encode() if isinstance(value, str) else value
        self.request(XsType.WRITE, path.encode() + b"\0" + data, tx, path)

    def mkdir(self, path: str, tx: int = 0) -> None:
        self._call(XsType.MKDIR, path, tx)

    def rm(self, path: str, tx: int = 0) -> None:
        self._call(XsType.RM, path, tx)

    def directory(self, path: str, tx: int = 0) -> list[str]:
        """Child names; falls back to DIRECTORY_PART when the list is too long for one
        reply, as libxenstore does."""
        try:
            payload = self._call(XsType.DIRECTORY, path, tx)
        except XenstoreError as err:
            if err.errno_name != "E2BIG":
                raise
            return self._directory_by_parts(path, tx)
        return [name.decode("latin-1") for name in wire.split_strings(payload)]

    def _directory_by_parts(self, path: str, tx: int) -> list[str]:
        """Collect the chunks; start over if the node changed (its generation moved)."""
        while True:
            names: list[bytes] = []
            offset = 0
            generation: bytes | None = None
            while True:
                chunk = self._call(XsType.DIRECTORY_PART, path, tx, f"{offset}\0".encode())
                gen, _, rest = chunk.partition(b"\0")
                if generation is not None and gen != generation:
                    break
                generation = gen
                done = rest.endswith(b"\0\0") or rest == b"\0"
                part = wire.split_strings(rest[:-1] if done else rest)
                if not part and not done:  # a daemon making no progress: don't spin
                    raise XenstoreError("EIO", path)
                names += part
                offset += sum(len(name) + 1 for name in part)
                if done:
                    return [name.decode("latin-1") for name in names]

    def get_perms(self, path: str, tx: int = 0) -> list[Perm]:
        return wire.parse_perms(wire.split_strings(self._call(XsType.GET_PERMS, path, tx)))

    def set_perms(self, path: str, perms: Sequence[_PermLike], tx: int = 0) -> None:
        entries = [Perm(perm.access, perm.domid) for perm in perms]
        self._call(XsType.SET_PERMS, path, tx, wire.format_perms(entries))

    def transaction_start(self) -> int:
        return int(self.request(XsType.TRANSACTION_START, b"\0").rstrip(b"\0"))

    def transaction_end(self, tx: int, commit: bool = True) -> None:
        """Commit (or abort) ``tx``; a conflicting commit raises XenstoreError(EAGAIN)."""
        self.request(XsType.TRANSACTION_END, b"T\0" if commit else b"F\0", tx)

    def watch(self, path: str, token: str) -> None:
        self._call(XsType.WATCH, path, 0, token.encode() + b"\0")

    def unwatch(self, path: str, token: str) -> None:
        self._call(XsType.UNWATCH, path, 0, token.encode() + b"\0")

    def read_watch(self, timeout: float | None = None) -> tuple[str, str] | None:
        """The next (path, token) event, or None if none arrives within ``timeout``
        seconds (None: wait forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._events:
            msg = self._receive(deadline)
            if msg is None:
                return None
            if msg.type != XsType.WATCH_EVENT:
                raise XenstoreError("EBADF")  # a reply nobody asked for
            self._queue_event(msg.payload)
        return self._events.popleft()

    def get_domain_path(self, domid: int) -> str:
        return self.request(XsType.GET_DOMAIN_PATH, f"{domid}\0".encode()).rstrip(b"\0").decode()
