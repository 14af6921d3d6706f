"""A small synchronous XenStore client, speaking the wire protocol over a socket or a device.

It is what the Python backends use: the shm backend connects to its domain's socket on
the emulated daemon, a Xen backend to the real ``xenstored`` socket or to
``/dev/xen/xenbus``.  Like libxenstore it sends req_id 0 and reads the replies in
order; a pipeline (:meth:`XsClient.pipeline`) sends several requests at once over a
socket, and watch events that arrive while it waits for a reply are queued for
:meth:`read_watch`.
Not thread-safe: use one client per thread.
"""

from __future__ import annotations

import _socket
import errno
import os
import select
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
    """Writes whole buffers to a file descriptor and reads what arrives, with an optional
    deadline for the first byte."""

    def __init__(self, fd: int, sock: _socket.socket | None) -> None:
        self.fd = fd
        self.sock = sock

    def write(self, data: bytes) -> None:
        """Send a whole buffer; on ``/dev/xen/xenbus`` in one write() call, which is how
        the kernel wants messages (it buffers until a message is complete)."""
        view = memoryview(data)
        while view:
            sent = os.write(self.fd, view)
            view = view[sent:]

    def read_some(self, deadline: float | None) -> bytes | None:
        """What the daemon sent, up to one read's worth (often several replies at once),
        or None if the deadline passes before any of it arrives."""
        if deadline is not None:
            timeout = max(0.0, deadline - time.monotonic())
            if not select.select([self.fd], [], [], timeout)[0]:
                return None
        data = os.read(self.fd, _READ_BYTES)
        if not data:
            raise ConnectionResetError(errno.ECONNRESET, "xenstore connection closed")
        return data

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        else:
            os.close(self.fd)


#: The most one read takes from the connection: replies sent together arrive together.
_READ_BYTES = 64 * 1024

#: One request as :meth:`XsClient._pipeline` takes it: type, payload, transaction, and
#: the path an error names.
_Request = tuple[XsType, bytes, int, str | None]


def _on_path(msg_type: XsType, path: str, tx: int, extra: bytes = b"") -> _Request:
    """A request whose payload is ``path``, a NUL, then ``extra``."""
    return (msg_type, path.encode() + b"\0" + extra, tx, path)


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _encode(request: _Request) -> bytes:
    msg_type, payload, tx, _ = request
    return Message(msg_type, payload, 0, tx).encode()


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
        return self.submit().results()

    def submit(self) -> XsReplies:
        """Send the queued requests now and read their replies later, with
        :meth:`XsReplies.results`: the round trip then overlaps whatever the caller does
        meanwhile.  The connection stays usable: a later request reads these replies
        first (the daemon answers in order)."""
        return self._client._submit(self._requests, self._results)


class XsReplies:
    """The replies to a submitted pipeline (:meth:`XsPipeline.submit`)."""

    def __init__(
        self, client: XsClient, requests: list[_Request], results: list[Callable[[bytes], object]]
    ) -> None:
        self._client = client
        self.requests = requests
        self._results = results
        self._payloads: list[bytes] | None = None
        self._failure: XenstoreError | None = None

    def arrived(self, payloads: list[bytes] | None, failure: XenstoreError | None) -> None:
        """Called by the client once every reply is read."""
        self._payloads, self._failure = payloads, failure

    def results(self) -> list[Any]:
        """Each request's result, in order, as :meth:`XsPipeline.execute` gives them; the
        first failure raises."""
        if self._payloads is None and self._failure is None:
            self._client._settle()
        if self._failure is not None:
            raise self._failure
        assert self._payloads is not None
        return [result(reply) for result, reply in zip(self._results, self._payloads, strict=True)]


class XsClient:
    """A XenStore connection.  ``transport`` is a connected socket or an open file
    descriptor (e.g. of ``/dev/xen/xenbus``); the client owns and closes it.

    Paths not starting with ``/`` are relative to the domain's home.  ``tx`` 0 means no
    transaction.  Errors raise :class:`XenstoreError`.
    """

    def __init__(self, transport: _socket.socket | int) -> None:
        if isinstance(transport, _socket.socket):
            transport.setblocking(True)
            self._io = _Transport(transport.fileno(), transport)
        else:
            self._io = _Transport(transport, None)
        self._decoder = wire.Decoder()
        #: Messages read from the connection and not yet looked at.
        self._inbox: deque[Message] = deque()
        #: Submitted pipelines whose replies are still to be read, oldest first.
        self._unread: deque[XsReplies] = deque()
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
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
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
        """Readable when a watch event (or stray data) is waiting on the connection.
        Events that arrived with a reply were read already and wait in the client:
        ``read_watch(0)`` takes them without waiting."""
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
        request."""
        self._check_sizes(requests)
        self._settle()
        if self._io.sock is None:
            return self._one_by_one(requests)
        self._io.write(b"".join([_encode(request) for request in requests]))
        return self._collect(requests)

    def _submit(
        self, requests: list[_Request], results: list[Callable[[bytes], object]]
    ) -> XsReplies:
        """Send ``requests`` (see :meth:`_pipeline`) and leave their replies for later."""
        self._check_sizes(requests)
        self._settle()
        submitted = XsReplies(self, requests, results)
        if self._io.sock is None:
            submitted.arrived(*self._caught(self._one_by_one, requests))
        else:
            self._io.write(b"".join([_encode(request) for request in requests]))
            self._unread.append(submitted)
        return submitted

    @staticmethod
    def _check_sizes(requests: Sequence[_Request]) -> None:
        for _, payload, _, path in requests:
            if len(payload) > wire.PAYLOAD_MAX:
                raise XenstoreError("E2BIG", path)

    def _settle(self) -> None:
        """Read the replies of every submitted pipeline still waiting for them."""
        while self._unread:
            submitted = self._unread[0]
            submitted.arrived(*self._caught(self._collect, submitted.requests))
            self._unread.popleft()

    @staticmethod
    def _caught(
        collect: Callable[[Sequence[_Request]], list[bytes]], requests: Sequence[_Request]
    ) -> tuple[list[bytes] | None, XenstoreError | None]:
        try:
            return collect(requests), None
        except XenstoreError as failure:
            return None, failure

    def _one_by_one(self, requests: Sequence[_Request]) -> list[bytes]:
        """Over ``/dev/xen/xenbus`` each request waits for its reply before the next goes
        out: the Linux device, which carries all its users over the kernel's one xenstore
        connection, was seen to lose a transaction's effect when its requests were
        pipelined (Xen 4.17, Linux 6.1 dom0: after a few channels published that way, a
        client no longer found the keys).  Each message is its own write, as the device
        wants."""
        replies: list[bytes] = []
        failure: XenstoreError | None = None
        for request in requests:
            self._io.write(_encode(request))
            try:
                replies += self._collect([request])
            except XenstoreError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return replies

    def _collect(self, requests: Sequence[_Request]) -> list[bytes]:
        """The replies to ``requests``, sent earlier; the first ERROR raises once all
        are read."""
        replies: list[bytes] = []
        failure: XenstoreError | None = None
        for msg_type, _, _, path in requests:
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
        """The next message, or None if none has begun to arrive by ``deadline``.  Once
        a message has begun we wait for all of it."""
        while not self._inbox:
            data = self._io.read_some(None if self._decoder.buffered else deadline)
            if data is None:
                return None
            try:
                self._inbox.extend(self._decoder.feed(data))
            except wire.PayloadTooLarge:
                raise XenstoreError("E2BIG") from None
        return self._inbox.popleft()

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
        self._settle()
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
