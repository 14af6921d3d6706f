"""Per-domain quotas that bound what one unprivileged domain makes xenstored hold: its
connections, and the memory of its nodes, watches and open transactions, counted as Xen
4.17 counts it (docs/xenstore.md, "Quotas").  Driven over the daemon's real sockets."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.xs_peer import Peer, fails

from vchansim.xenstore import wire
from vchansim.xenstore.server import XenstoreService, socket_path
from vchansim.xenstore.store import Quotas, Xenstored
from vchansim.xenstore.wire import Message, XsType

TIMEOUT = 30.0


class Service:
    """The socket server of a store, run in a thread for one test."""

    def __init__(self, store: Xenstored, directory: Path) -> None:
        self.store = store
        self.directory = directory
        self.service = XenstoreService(store, log=lambda line: None)
        for domid in (0, 1):
            store.ensure_domain(domid)
            self.service.listen(domid, socket_path(directory, domid))
        self.thread = threading.Thread(target=self.service.serve_forever, daemon=True)
        self.thread.start()

    def connect(self, domid: int) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        sock.connect(socket_path(self.directory, domid))
        return sock

    def stop(self) -> None:
        self.service.shutdown()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()
        self.service.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    running = Service(Xenstored(), tmp_path)
    yield running
    running.stop()


def exchange(sock: socket.socket, requests: list[Message]) -> list[Message]:
    """Send ``requests`` back to back and return their replies, in order."""
    sock.sendall(b"".join(request.encode() for request in requests))
    decoder = wire.Decoder()
    replies: list[Message] = []
    while len(replies) < len(requests):
        data = sock.recv(65536)
        assert data, "the daemon closed the connection"
        replies += [m for m in decoder.feed(data) if m.type != XsType.WATCH_EVENT]
    return replies


def answer(reply: Message) -> str:
    return reply.payload.rstrip(b"\0").decode() if reply.type == XsType.ERROR else "OK"


def test_one_domain_cannot_grow_the_daemon_past_its_memory_quota(service: Service) -> None:
    """20 connections x 10 open transactions x 100 new nodes of 2000 bytes would be 40 MB;
    4.17's hard memory quota (2.5 MiB) refuses every write past it with EIO, and the
    transactions that met it fail at commit with ENOMEM."""
    store, quota = service.store, service.store.quotas.memory
    before = store.memory_of(1)
    conns = [service.connect(1) for _ in range(20)]
    answers: Counter[str] = Counter()
    transactions = []
    for c, sock in enumerate(conns):
        starts = exchange(sock, [Message(XsType.TRANSACTION_START, b"\0")] * 10)
        for t, started in enumerate(starts):
            tx_id = int(started.payload.rstrip(b"\0"))
            writes = [
                Message(XsType.WRITE, f"data/c{c}t{t}n{i}\0".encode() + b"x" * 2000, 0, tx_id)
                for i in range(100)
            ]
            answers.update(answer(reply) for reply in exchange(sock, writes))
            transactions.append((sock, tx_id))
    assert set(answers) == {"OK", "EIO"}
    assert answers["OK"] * 2000 < quota  # what was taken fits the quota...
    assert answers["OK"] * 2100 > quota * 0.9  # ...and the quota, not something else, refused
    assert store.memory_of(1) < quota + 200 * store.quotas.node_size  # + each tx's read copy
    ends: Counter[str] = Counter()
    for sock, tx_id in transactions:
        commit = Message(XsType.TRANSACTION_END, b"T\0", 0, tx_id)
        ends.update(answer(reply) for reply in exchange(sock, [commit]))
    assert ends["ENOMEM"] >= 1 and sum(ends.values()) == 200
    for sock in conns:
        sock.close()
    dom0 = service.connect(0)
    exchange(dom0, [Message(XsType.READ, b"domid\0")])  # the closes have been handled
    dom0.close()
    assert store.memory_of(1) - before <= answers["OK"] * 2100  # only committed nodes stay


def test_a_domain_beyond_its_connection_quota_is_hung_up_on(tmp_path: Path) -> None:
    running = Service(Xenstored(Quotas(connections=3)), tmp_path)
    try:
        kept = [running.connect(1) for _ in range(3)]
        for sock in kept:
            assert answer(exchange(sock, [Message(XsType.READ, b"domid\0")])[0]) == "OK"
        extra = running.connect(1)
        assert extra.recv(1) == b""  # closed unanswered, as a ring xenstored does not serve
        extra.close()
        privileged = [running.connect(0) for _ in range(5)]  # domain 0 has no such quota
        for sock in privileged:
            assert answer(exchange(sock, [Message(XsType.READ, b"domid\0")])[0]) == "OK"
            sock.close()
        kept.pop().close()
        again = running.connect(1)
        assert answer(exchange(again, [Message(XsType.READ, b"domid\0")])[0]) == "OK"
        for sock in (again, *kept):
            sock.close()
    finally:
        running.stop()


def test_memory_quota_errors_are_4_17s() -> None:
    """A new node over the quota is EIO (4.17's create path); rewriting an existing node
    over it is EINVAL (4.17 returns a stale errno there, docs list it); a watch is ENOMEM.
    The quota refuses at ``>=``."""
    store = Xenstored()
    store.ensure_domain(1)
    dom1 = Peer(store, 1)
    dom1.write("data/a", b"x" * 1000)
    store.quotas.memory = store.memory_of(1) + 100
    with fails("EIO"):
        dom1.write("data/c", b"x" * 48)  # 32 + 48 bytes of record and 20 of path
    assert store.node("/local/domain/1/data/c") is None
    with fails("EINVAL"):
        dom1.write("data/a", b"x" * 1100)
    dom1.write("data/a", b"x" * 1050)
    path = "/local/domain/1/data/a"
    dom1.watch("data/a", "t" * (store.quotas.memory - store.memory_of(1) - len(path) - 1))
    assert store.memory_of(1) == store.quotas.memory - 1
    with fails("ENOMEM"):
        dom1.watch("data/a", "u")
