"""The Python side of each benchmarked transport, as one endpoint process sees it.

Every endpoint offers the same four data calls, so the benchmark loops in
:mod:`vchansim.bench.worker` are one piece of code for all of them:

* ``write(view)`` — stream: all of ``view`` (blocking);
* ``read_into(view)`` — stream: 1..len bytes into ``view``;
* ``send(view)`` / ``recv_into(view)`` — packets of exactly ``len(view)`` bytes.

A vchan maps them onto :class:`~vchansim.channel.Vchan`'s own calls.  Pipes and socket
pairs have no packets of unbounded size, so their packet calls are a full write and an
exact read -- what an application framing messages over them does.  Their "ring" is the
kernel's buffer: ``F_SETPIPE_SZ`` for a pipe, ``SO_SNDBUF``/``SO_RCVBUF`` for a socket.
"""

from __future__ import annotations

import fcntl
import io
import os
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

from ..backends.shm import ShmBackend
from ..channel import Vchan
from ..errors import ConfigError

#: Linux's fcntl command to resize a pipe (not exported by Python's fcntl before 3.10 on
#: every platform, so spelled out).
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

DataCall = Callable[[memoryview], int]


class Endpoint(ABC):
    """One end of a transport; :meth:`open` (re)creates its channel at a ring size."""

    write: DataCall
    read_into: DataCall
    send: DataCall
    recv_into: DataCall

    @abstractmethod
    def open(self, role: str, path: str, ring: int) -> tuple[float, int, int]:
        """Set up the channel as ``role`` (server or client); return the seconds the setup
        took, the size of the client -> server buffer it got, and its event port (0 for
        transports without one)."""

    @abstractmethod
    def close(self) -> None:
        """Tear the channel down (the peer sees it closed)."""


class VchanEndpoint(Endpoint):
    """A :class:`Vchan` on the shm emulator, as domain ``domid`` talking to ``peer``."""

    def __init__(self, domid: int, peer: int, spin: str | float = "off") -> None:
        self._backend = ShmBackend(domid)
        self._peer = peer
        self._spin = spin
        self._chan: Vchan | None = None

    def open(self, role: str, path: str, ring: int) -> tuple[float, int, int]:
        self.close()
        start = time.perf_counter()
        if role == "server":
            chan = Vchan.server(self._backend, self._peer, path, ring, ring)
            size = chan.read_ring.size
        else:
            chan = Vchan.client(self._backend, self._peer, path)
            size = chan.write_ring.size
        elapsed = time.perf_counter() - start
        chan.spin = self._spin
        self._chan = chan
        self.write, self.read_into = chan.write, chan.read_into
        self.send, self.recv_into = chan.send, chan.recv_into
        return elapsed, size, chan.port

    def close(self) -> None:
        if self._chan is not None:
            self._chan.close()
            self._chan = None


def _exact(read_into: DataCall) -> DataCall:
    """A packet read over a byte stream: loop until the whole view is filled."""

    def recv_into(view: memoryview) -> int:
        want = len(view)
        got = read_into(view)
        while got < want:
            n = read_into(view[got:])
            if not n:
                raise ConnectionError(f"end of stream after {got} of {want} bytes")
            got += n
        return want

    return recv_into


class _KernelEndpoint(Endpoint):
    """Pipes and socket pairs: descriptors inherited from the runner, resized per open."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._rfile = io.FileIO(read_fd, "rb", closefd=False)
        self._wfile = io.FileIO(write_fd, "wb", closefd=False)
        self.read_into = self._rfile.readinto
        self.recv_into = _exact(self._rfile.readinto)
        self.write = self.send = self._write_all

    def _write_all(self, view: memoryview) -> int:
        done = self._wfile.write(view)
        while done < len(view):  # only if a signal interrupted a blocking write
            done += self._wfile.write(view[done:])
        return done

    def open(self, role: str, path: str, ring: int) -> tuple[float, int, int]:
        start = time.perf_counter()
        self._close_fresh(self._fresh(ring))
        elapsed = time.perf_counter() - start
        return elapsed, self._resize(ring), 0

    @abstractmethod
    def _fresh(self, ring: int) -> tuple[int, ...]:
        """Create and size a new kernel channel (timed as this transport's setup)."""

    @abstractmethod
    def _resize(self, ring: int) -> int:
        """Resize the inherited channel; return the buffer size the kernel granted."""

    @staticmethod
    def _close_fresh(fds: tuple[int, ...]) -> None:
        for fd in fds:
            os.close(fd)

    def close(self) -> None:
        """Nothing to tear down: the inherited descriptors live as long as the process."""


class PipeEndpoint(_KernelEndpoint):
    """Two pipes, one per direction; the ring size is the pipe's capacity."""

    def _fresh(self, ring: int) -> tuple[int, ...]:
        fds = (*os.pipe(), *os.pipe())
        for fd in fds[1::2]:
            fcntl.fcntl(fd, F_SETPIPE_SZ, ring)
        return fds

    def _resize(self, ring: int) -> int:
        # Each end sizes the pipe it writes; the peer sizes the other one.
        return fcntl.fcntl(self._wfile.fileno(), F_SETPIPE_SZ, ring)


class SocketEndpoint(_KernelEndpoint):
    """One AF_UNIX stream socket pair; the ring size is the send and receive buffer."""

    def __init__(self, fd: int) -> None:
        super().__init__(fd, fd)
        self._sock = socket.socket(fileno=fd)

    def _fresh(self, ring: int) -> tuple[int, ...]:
        pair = socket.socketpair()
        for sock in pair:
            _size_socket(sock, ring)
        return tuple(sock.detach() for sock in pair)

    def _resize(self, ring: int) -> int:
        _size_socket(self._sock, ring)
        return self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


def _size_socket(sock: socket.socket, ring: int) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, ring)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, ring)


def make_endpoint(
    transport: str,
    *,
    domid: int = 0,
    peer: int = 0,
    spin: str | float = "off",
    fds: tuple[int, ...] = (),
) -> Endpoint:
    """The endpoint of ``transport`` (vchansim, pipe or socketpair) for this process."""
    if transport == "vchansim":
        return VchanEndpoint(domid, peer, spin)
    if transport == "pipe" and len(fds) == 2:
        return PipeEndpoint(*fds)
    if transport == "socketpair" and len(fds) == 1:
        return SocketEndpoint(fds[0])
    raise ConfigError(
        f"no Python endpoint for transport {transport!r} with {len(fds)} descriptor(s): "
        "vchansim needs none, pipe two (read, write), socketpair one"
    )
