"""A sans-IO client of the emulated xenstored for tests: a connection, its replies, events."""

from __future__ import annotations

from contextlib import AbstractContextManager

import pytest

from vchansim.xenstore import wire
from vchansim.xenstore.store import Quotas, Xenstored, XsConnection
from vchansim.xenstore.wire import Message, XsType


def store_with_domains(quotas: Quotas | None = None) -> Xenstored:
    """A xenstored model (with ``quotas``, else Xen's) where domains 0, 1 and 2 have
    their homes, as a toolstack would have made them."""
    store = Xenstored(quotas) if quotas is not None else Xenstored()
    for domid in (0, 1, 2):
        store.ensure_domain(domid)
    return store


class Failed(Exception):
    """An ERROR reply; ``name`` is the errno name."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class Peer:
    """One connection, with the messages it was sent split into replies and events."""

    def __init__(self, store: Xenstored, domid: int) -> None:
        self.sent: list[bytes] = []
        self.log: list[str] = []
        self.conn = XsConnection(
            store, domid, self.sent.append, lambda line: self.log.append(str(line))
        )
        self.events: list[tuple[str, str]] = []

    def exchange(self, msg_type: int, payload: bytes, tx: int = 0, req_id: int = 0) -> Message:
        """Send one request; return its reply and file the events that came with it."""
        self._collect()
        self.conn.receive(Message(msg_type, payload, req_id, tx).encode())
        messages = wire.Decoder().feed(b"".join(self.sent))
        self.sent.clear()
        replies = [m for m in messages if m.type != XsType.WATCH_EVENT]
        assert len(replies) == 1, messages
        self.events += _events(messages)
        return replies[0]

    def call(self, msg_type: int, *fields: bytes | str, tx: int = 0) -> bytes:
        reply = self.exchange(msg_type, wire.join_strings(fields), tx)
        if reply.type == XsType.ERROR:
            raise Failed(reply.payload.rstrip(b"\0").decode())
        assert reply.type == msg_type
        return reply.payload

    def read(self, path: str, tx: int = 0) -> bytes:
        return self.call(XsType.READ, path, tx=tx)

    def write(self, path: str, value: bytes | str, tx: int = 0) -> None:
        data = value.encode() if isinstance(value, str) else value
        reply = self.exchange(XsType.WRITE, path.encode() + b"\0" + data, tx)
        if reply.type == XsType.ERROR:
            raise Failed(reply.payload.rstrip(b"\0").decode())

    def rm(self, path: str, tx: int = 0) -> None:
        self.call(XsType.RM, path, tx=tx)

    def ls(self, path: str, tx: int = 0) -> list[str]:
        return [n.decode() for n in wire.split_strings(self.call(XsType.DIRECTORY, path, tx=tx))]

    def perms(self, path: str) -> list[str]:
        return [p.decode() for p in wire.split_strings(self.call(XsType.GET_PERMS, path))]

    def chmod(self, path: str, *perms: str, tx: int = 0) -> None:
        self.call(XsType.SET_PERMS, path, *perms, tx=tx)

    def watch(self, path: str, token: str = "t") -> None:
        self.call(XsType.WATCH, path, token)

    def start(self) -> int:
        return int(self.call(XsType.TRANSACTION_START, "").rstrip(b"\0"))

    def end(self, tx: int, commit: bool = True) -> None:
        self.call(XsType.TRANSACTION_END, "T" if commit else "F", tx=tx)

    def take_events(self) -> list[tuple[str, str]]:
        """Events delivered so far, including ones caused by other connections."""
        self._collect()
        events, self.events = self.events, []
        return events

    def _collect(self) -> None:
        """File the events other connections caused since our last request."""
        self.events += _events(wire.Decoder().feed(b"".join(self.sent)))
        self.sent.clear()


def _events(messages: list[Message]) -> list[tuple[str, str]]:
    fields = [wire.split_strings(m.payload) for m in messages if m.type == XsType.WATCH_EVENT]
    return [(path.decode(), token.decode()) for path, token in fields]


def fails(name: str) -> AbstractContextManager[pytest.ExceptionInfo[Failed]]:
    return pytest.raises(Failed, match=f"^{name}$")
