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
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Protocol

from ..errors import StoreError
from . import wire
from .wire import Message, Perm, XsType


class XenstoreError(StoreError):
    """The daemon (or the client itself) refused an operation.

    ``errno_name`` is the name xenstored sent (``ENOENT``, ``EAGAIN``...), ``errno`` the
    matching number and ``filename`` the path concerned, if any.
    """

    def __init__(self, errno_name: str, path: str | None = None) -> None:
        number = wire.ERRNO_BY_NAME.get(errno_name) or int(getattr(errno, errno_name, errno.EINVAL))
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
            if deadline is not None and not chunks:  # else a blocking read is the wait
                timeout = max(0.0, deadline - time.monotonic())
                if not select.select([self.fd], [], [], timeout)[0]:
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


#: One request as :meth:`XsClient._pipeline` takes it: type, payload, transaction, and
#: the path an error names.
_Request = tuple[XsType, bytes, int, str | None]


def _on_path(msg_type: XsType, path: str, tx: int, extra: bytes = b"") -> _Request:
    """A request whose payload is ``path``, a NUL, then ``extra``."""
    return (msg_type, path.encode() + b"\0" + extra, tx, path)


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _perms_arg(perms: Sequence[_PermLike]) -> bytes:
    return wire.format_perms([Perm(perm.access, perm.domid) for perm in perms])


_TX_START: _Request = (XsType.TRANSACTION_START, b"\0", 0, None)


def _tx_id(payload: bytes) -> int:
    """The id in a TRANSACTION_START reply."""
    return int(payload.rstrip(b"\0"))


def _nothing(payload: bytes) -> None:
    """The result of a request that answers only OK."""


def _payload(payload: bytes) -> bytes:
    return payload


class XsPipeline:
    """XenStore requests queued to go out together, so that they cost one round trip.

    Each method queues one request and returns the pipeline, so calls chain;
    :meth:`execute` sends them and returns their results in order.  Only requests that
    do not need an earlier one's answer belong together: a transaction's writes need its
    id, so they go in a pipeline after the one that started it.
    """

    def __init__(self, client: XsClient) -> None:
        self._client = client
        self._requests: list[_Request] = []
        self._results: list[Callable[[bytes], object]] = []

    def _queue(self, request: _Request, result: Callable[[bytes], object]) -> XsPipeline:
        self._requests.append(request)
        self._results.append(result)
        return self

    def read(self, path: str, tx: int = 0) -> XsPipeline:
        return self._queue(_on_path(XsType.READ, path, tx), _payload)

    def write(self, path: str, value: bytes | str, tx: int = 0) -> XsPipeline:
        return self._queue(_on_path(XsType.WRITE, path, tx, _as_bytes(value)), _nothing)

    def set_perms(self, path: str, perms: Sequence[_PermLike], tx: int = 0) -> XsPipeline:
        return self._queue(_on_path(XsType.SET_PERMS, path, tx, _perms_arg(perms)), _nothing)

    def transaction_start(self) -> XsPipeline:
        return self._queue(_TX_START, _tx_id)

    def execute(self) -> list[Any]:
        """Send the queued requests and return each one's result, in order: a read's
        bytes, a started transaction's id, None for the others.  If any failed, the first
        failure raises once all are answered; the others took effect (queue them inside a
        transaction to have all or nothing)."""
        replies = self._client._pipeline(self._requests)
        return [result(reply) for result, reply in zip(self._results, replies, strict=True)]


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
            return cls.connect_socket(path)
        return cls(os.open(path, os.O_RDWR | os.O_CLOEXEC))

    @classmethod
    def connect_socket(cls, path: str | os.PathLike[str]) -> XsClient:
        """Connect to the daemon's UNIX socket at ``path``.  Anything else there (no file,
        a file that is not a socket, a socket nobody listens on) raises the ``connect``
        error -- FileNotFoundError or ConnectionRefusedError -- never opens it as a device."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(os.fspath(path))
        except OSError:
            sock.close()
            raise
        return cls(sock)

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
        return self._pipeline([(msg_type, payload, tx, path)])[0]

    def _pipeline(self, requests: Sequence[_Request]) -> list[bytes]:
        """Send ``requests`` and return their replies' payloads.  The first ERROR reply
        raises, once every reply is in, so the connection stays in step for the next
        request.

        Over a socket the requests go back to back and the replies are read after them:
        one round trip for all, since xenstored answers a connection's requests in order.
        Over ``/dev/xen/xenbus`` each request waits for its reply before the next goes
        out: the Linux device, which carries all its users over the kernel's one xenstore
        connection, was seen to lose a transaction's effect when its requests were
        pipelined (Xen 4.17, Linux 6.1 dom0: after a few channels published that way, a
        client no longer found the keys).  Each message is its own write, as the device
        wants."""
        for _, payload, _, path in requests:
            if len(payload) > wire.PAYLOAD_MAX:
                raise XenstoreError("E2BIG", path)
        batches = [requests] if self._io.sock is not None else [[one] for one in requests]
        replies: list[bytes] = []
        failure: XenstoreError | None = None
        for batch in batches:
            for msg_type, payload, tx, _ in batch:
                self._io.write(Message(msg_type, payload, 0, tx).encode())
            for msg_type, _, _, path in batch:
                reply = self._reply(msg_type, path)
                if isinstance(reply, XenstoreError):
                    failure = failure or reply
                else:
                    replies.append(reply)
        if failure is not None:
            raise failure
        return replies

    def _reply(self, msg_type: XsType, path: str | None) -> bytes | XenstoreError:
        """The next reply's payload, or the error it reports; watch events met on the way
        are queued.  A reply of another type raises: the connection is out of step."""
        while True:
            reply = self._receive(None)
            assert reply is not None  # no deadline
            if reply.type == XsType.WATCH_EVENT:
                self._queue_event(reply.payload)
            elif reply.type == XsType.ERROR:
                return XenstoreError(reply.payload.rstrip(b"\0").decode("latin-1"), path)
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
        return self._pipeline([_on_path(msg_type, path, tx, extra)])[0]

    # -- operations --

    def read(self, path: str, tx: int = 0) -> bytes:
        return self._call(XsType.READ, path, tx)

    def write(self, path: str, value: bytes | str, tx: int = 0) -> None:
        self._call(XsType.WRITE, path, tx, _as_bytes(value))

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
        self._call(XsType.SET_PERMS, path, tx, _perms_arg(perms))

    def transaction_start(self) -> int:
        return _tx_id(self.request(*_TX_START))

    def pipeline(self) -> XsPipeline:
        """Queue requests to send together, one round trip for all (see XsPipeline)."""
        return XsPipeline(self)

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

    # -- the toolstack's operations (domain 0 only, as libxenstore's xs_introduce_domain...) --

    def introduce_domain(self, domid: int, ring_frame: int, port: int) -> None:
        """INTRODUCE: have xenstored serve ``domid`` (its ring frame and event channel)."""
        self.request(XsType.INTRODUCE, wire.join_strings(map(str, (domid, ring_frame, port))))

    def release_domain(self, domid: int) -> None:
        """RELEASE: xenstored forgets ``domid``, removing the nodes it owns."""
        self.request(XsType.RELEASE, f"{domid}\0".encode())

    def is_domain_introduced(self, domid: int) -> bool:
        return self.request(XsType.IS_DOMAIN_INTRODUCED, f"{domid}\0".encode()) == b"T\0"
