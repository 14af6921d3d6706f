"""Serves a :class:`~vchansim.xenstore.store.Xenstored` on UNIX sockets, one per emulated domain.

A client connected to domain N's socket *is* domain N, the way a guest's xenbus ring is:
that is how the emulation gives each process its domain identity without a hypervisor.
The real tools reach it with ``XENSTORED_PATH=<socket>``.

The service never blocks: every socket is non-blocking and replies wait in a per-client
buffer until the socket can take them, so one slow or hostile client cannot stall the
others.  It runs inside somebody else's ``selectors`` loop (the hub's) -- each registered
key's ``data`` is a ``handler(mask)`` callable -- or on its own with :meth:`serve_forever`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import signal
import socket
import traceback
from collections.abc import Sequence
from pathlib import Path

from ..unixsock import listen_unix
from ..xen import check_domid
from .store import Log, Xenstored, XsConnection
from .wire import XsProtocolError

#: Stop reading a client's requests while this many reply bytes wait for it.
_READ_PAUSE_BYTES = 256 * 1024
#: Drop a client that lets this many bytes (mostly watch events) pile up unread.
_OUTPUT_LIMIT_BYTES = 8 * 1024 * 1024
_RECV_BYTES = 64 * 1024
_ACCEPTS_PER_WAKEUP = 64


def socket_path(directory: str | os.PathLike[str], domid: int) -> str:
    """The conventional socket name for domain ``domid`` inside ``directory``."""
    return os.path.join(os.fspath(directory), f"xenstored-dom{check_domid(domid)}.sock")


class _Listener:
    """A listening socket whose connections act as one domain."""

    def __init__(self, service: XenstoreService, sock: socket.socket, domid: int, path: str):
        self.service = service
        self.sock = sock
        self.domid = domid
        self.path = path
        self.inode = _inode(path)

    def close(self) -> None:
        selector = self.service._selector
        if selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(self.sock)
        self.sock.close()

    def handle(self, mask: int) -> None:
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # e.g. EMFILE: keep serving the clients we have
                self.service._log(f"dom{self.domid} accept failed: {err}")
                return
            refusal = self.service.store.admission(self.domid)
            if refusal is None:
                self.service._add_client(conn, self.domid)
            else:  # e.g. released: like a guest whose ring xenstored no longer serves
                conn.close()
                self.service._log(f"dom{self.domid} connection refused: {refusal}")


class _Client:
    """One accepted connection: socket, output buffer and the sans-IO XsConnection."""

    def __init__(self, service: XenstoreService, sock: socket.socket, domid: int) -> None:
        self.service = service
        self.sock = sock
        self.domid = domid
        self.out = bytearray()
        self.events = selectors.EVENT_READ
        self.doomed: str | None = None
        self.alive = True
        #: Inside :meth:`handle`'s read, whose replies it sends itself.
        self._reading = False
        self.xs = XsConnection(service.store, domid, self._queue, service._log_fn, on_end=self.drop)

    def handle(self, mask: int) -> None:
        if not self.alive:  # ended while its wakeup was pending (its domain was released)
            return
        if self.doomed is not None:
            self.drop(self.doomed)
            return
        if mask & selectors.EVENT_READ:
            self._reading = True
            try:
                self._read()
            finally:
                self._reading = False
        if self.alive and self.out:
            self._flush()

    def _read(self) -> None:
        try:
            data = self.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self.drop(f"receive failed: {err}")
            return
        if not data:
            self.drop("closed by the client")
            return
        try:
            self.xs.receive(data)
        except XsProtocolError as err:
            self.drop(f"protocol violation: {err}")
        except Exception:  # a bug in the store must not take the daemon down
            self.service._log(traceback.format_exc().rstrip())
            self.drop("internal error while handling its request")

    def _queue(self, data: bytes) -> None:
        """``send`` callback of the XsConnection: buffer ``data``.  Replies to what we are
        reading go out together when the read is done (:meth:`handle`), in one send, with
        no change to the selector.  Anything else -- a watch event fired by another
        client's request, which may be running now -- asks for a write wakeup."""
        if not self.alive or self.doomed is not None:
            return
        self.out += data
        if len(self.out) > _OUTPUT_LIMIT_BYTES:
            self.doomed = f"more than {_OUTPUT_LIMIT_BYTES} bytes left unread"
        if not self._reading:
            self._update_interest()

    def _flush(self) -> None:
        while self.out:
            try:
                sent = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as err:
                self.drop(f"send failed: {err}")
                return
            del self.out[:sent]
        self._update_interest()

    def _update_interest(self) -> None:
        wanted = selectors.EVENT_WRITE if self.out else 0
        if len(self.out) < _READ_PAUSE_BYTES:
            wanted |= selectors.EVENT_READ
        selector = self.service._selector
        if wanted != self.events and selector is not None and self.alive:
            selector.modify(self.sock, wanted, self.handle)
        self.events = wanted

    def drop(self, reason: str) -> None:
        if not self.alive:
            return
        self.alive = False
        if self.out:  # like xenstored, flush what we can without blocking
            with contextlib.suppress(OSError):
                self.sock.send(self.out)
        selector = self.service._selector
        if selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(self.sock)
        self.sock.close()
        self.xs.close()
        self.service._clients.discard(self)
        self.service._log(f"dom{self.domid} connection ended: {reason}")


class XenstoreService:
    """The socket front end of a Xenstored.  See the module docstring."""

    def __init__(self, store: Xenstored, log: Log | None = None) -> None:
        self.store = store
        self._log_fn = log
        self._selector: selectors.BaseSelector | None = None
        self._listeners: list[_Listener] = []
        self._clients: set[_Client] = set()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False

    def _log(self, line: str) -> None:
        if self._log_fn is not None:
            self._log_fn(line)

    def listen(self, domid: int, path: str | os.PathLike[str]) -> None:
        """Serve domain ``domid`` on a new socket at ``path`` (mode 0600).

        Gives the domain its home in the store first.  A stale socket file at ``path`` is
        replaced; one that somebody still serves on is not (FileExistsError).  Listening
        for a domain again (see :meth:`serves`) closes its previous socket.
        """
        check_domid(domid)
        path = os.fspath(path)
        self.store.ensure_domain(domid)
        sock = listen_unix(path, socket.SOCK_STREAM)  # refused before anything changes
        for old in [lst for lst in self._listeners if lst.domid == domid]:
            old.close()
            self._listeners.remove(old)
        listener = _Listener(self, sock, domid, path)
        self._listeners.append(listener)
        if self._selector is not None:
            self._selector.register(sock, selectors.EVENT_READ, listener.handle)
        self._log(f"dom{domid} xenstore socket {path}")

    def serves(self, domid: int) -> bool:
        """Whether domain ``domid``'s socket file is still the one this service listens
        on.  A program that is a xenstored itself (Xen's, run as a domain of the
        emulator) unlinks the file at its ``XENSTORED_PATH`` and binds its own there,
        which is left dead when it exits; its clients then connect to nobody."""
        return any(lst.domid == domid and _inode(lst.path) == lst.inode for lst in self._listeners)

    def attach(self, selector: selectors.BaseSelector) -> None:
        """Register every socket with ``selector``; the caller's loop then calls
        ``key.data(mask)`` for each ready key."""
        self._selector = selector
        for listener in self._listeners:
            selector.register(listener.sock, selectors.EVENT_READ, listener.handle)
        for client in self._clients:
            selector.register(client.sock, client.events, client.handle)

    def detach(self) -> None:
        """Unregister every socket from the selector given to :meth:`attach`."""
        if self._selector is None:
            return
        for sock in [lst.sock for lst in self._listeners] + [c.sock for c in self._clients]:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
        self._selector = None

    def _add_client(self, sock: socket.socket, domid: int) -> None:
        sock.setblocking(False)
        client = _Client(self, sock, domid)
        self._clients.add(client)
        if self._selector is not None:
            self._selector.register(sock, client.events, client.handle)
        self._log(f"dom{domid} connected")

    def connection_count(self) -> int:
        """Clients currently connected, over all domains."""
        return len(self._clients)

    def serve_forever(self) -> None:
        """Run a private selector loop until :meth:`shutdown` (from any thread)."""
        selector = selectors.DefaultSelector()
        self._stopping = False
        selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self.attach(selector)
        try:
            while not self._stopping:
                for key, mask in selector.select():
                    key.data(mask)
        finally:
            self.detach()
            selector.close()

    def shutdown(self) -> None:
        """Make :meth:`serve_forever` return soon; safe from other threads and signals."""
        with contextlib.suppress(OSError):  # a full wake pipe already says "stop"
            self._wake_w.send(b"x")

    def _on_wake(self, mask: int) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(64)
        self._stopping = True

    def close(self) -> None:
        """Disconnect every client, close and unlink every listening socket."""
        for client in list(self._clients):
            client.drop("service closing")
        self.detach()
        for listener in self._listeners:
            listener.sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(listener.path)
        self._listeners.clear()
        self._wake_r.close()
        self._wake_w.close()


def _inode(path: str) -> tuple[int, int] | None:
    """The identity of the file at ``path``, None when there is none."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m vchansim.xenstore.server --socket-dir D --domains 0,1,2``"""
    parser = argparse.ArgumentParser(description="Emulated xenstored on per-domain sockets.")
    parser.add_argument("--socket-dir", required=True, type=Path)
    parser.add_argument("--domains", default="0", help="comma-separated domain ids")
    args = parser.parse_args(argv)
    domains = [int(part) for part in args.domains.split(",") if part.strip()]
    args.socket_dir.mkdir(parents=True, exist_ok=True)
    service = XenstoreService(Xenstored(), log=lambda line: print(line, flush=True))
    for domid in domains:
        service.listen(domid, socket_path(args.socket_dir, domid))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: service.shutdown())
    try:
        service.serve_forever()
    finally:
        service.close()


if __name__ == "__main__":
    main()
