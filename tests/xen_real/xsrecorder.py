"""A XenStore relay that records every message, connection by connection.

It listens on a UNIX socket of its own and forwards each connection to a xenstored socket
(the real daemon's, or the emulated one's), decoding both directions with the project's
wire codec.  Pointing a client at it (``XENSTORED_PATH``, or a stand-in device) shows
exactly what that client said -- which is how the tests compare vchansim's XenStore
traffic with docs/protocol.md §7.9 and with Xen's C library.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
from dataclasses import dataclass, field

from vchansim.xenstore.wire import Decoder, Message


@dataclass
class Conversation:
    """One client connection: its requests and the daemon's replies, in order."""

    requests: list[Message] = field(default_factory=list)
    replies: list[Message] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)

    def summary(self) -> list[tuple[str, int, list[bytes]]]:
        """(type name, tx_id, NUL-separated fields) of each request."""
        return [(m.type_name, m.tx_id, m.payload.split(b"\0")) for m in self.requests]


class XenstoreRecorder:
    """Relay ``listen_path`` -> ``upstream_path``, recording.  Use as a context manager."""

    def __init__(self, listen_path: str, upstream_path: str) -> None:
        self.listen_path = listen_path
        self.upstream_path = upstream_path
        self.conversations: list[Conversation] = []
        self._arrived = threading.Condition()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(listen_path)
        self._listener.listen(16)
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="xs-recorder", daemon=True)

    def __enter__(self) -> XenstoreRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop_w.send(b"x")
        self._thread.join(10)
        for sock in (self._listener, self._stop_r, self._stop_w):
            sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.listen_path)

    def wait_finished(self, count: int, timeout: float = 10.0) -> list[Conversation]:
        """The first ``count`` conversations, once each has ended (bounded wait)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.conversations) >= count, timeout):
                raise TimeoutError(
                    f"only {len(self.conversations)} of {count} XenStore connections came"
                )
            first = self.conversations[:count]
        for conv in first:
            if not conv.closed.wait(timeout):
                raise TimeoutError("a recorded XenStore connection stayed open")
        return first

    # -- the relay thread -------------------------------------------------------------
    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, None)
        sel.register(self._stop_r, selectors.EVENT_READ, None)
        try:
            while True:
                for key, _ in sel.select():
                    if key.fileobj is self._stop_r:
                        return
                    if key.fileobj is self._listener:
                        self._accept(sel)
                    else:
                        key.data(sel)
        finally:
            for key in list(sel.get_map().values()):
                if key.fileobj not in (self._listener, self._stop_r):
                    key.fileobj.close()  # type: ignore[union-attr]
            sel.close()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        client, _ = self._listener.accept()
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(self.upstream_path)
        conv = Conversation()
        with self._arrived:
            self.conversations.append(conv)
            self._arrived.notify_all()
        to_daemon, to_client = Decoder(), Decoder()

        def pump(src: socket.socket, dst: socket.socket, decoder: Decoder, log: list[Message]):
            def handle(sel: selectors.BaseSelector) -> None:
                data = src.recv(65536)
                if not data:
                    for sock in (client, upstream):
                        sel.unregister(sock)
                        sock.close()
                    conv.closed.set()
                    return
                log.extend(decoder.feed(data))
                dst.sendall(data)

            return handle

        read = selectors.EVENT_READ
        sel.register(client, read, pump(client, upstream, to_daemon, conv.requests))
        sel.register(upstream, read, pump(upstream, client, to_client, conv.replies))
