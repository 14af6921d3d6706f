"""vchansim's xenstored answers as the real one: every case of ``xs_corpus`` is played on
a fresh dom0 connection to Xen 4.17's C xenstored and to vchansim's store, and the two
transcripts -- each reply and watch event, byte for byte -- must be equal."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
from xs_corpus import CASES, CLEANUP, Exchange, Step, play, until_marker

from vchansim.xenstore import wire
from vchansim.xenstore.store import Xenstored, XsConnection
from vchansim.xenstore.wire import Message

DAEMON = "/var/run/xenstored/socket"
TIMEOUT = 30.0


def real_exchange(sock: socket.socket) -> Exchange:
    def exchange(data: bytes) -> list[Message]:
        sock.sendall(data)
        decoder, got = wire.Decoder(), []
        while True:
            chunk = sock.recv(65536)
            assert chunk, "xenstored closed the connection"
            if until_marker(decoder, chunk, got):
                return got

    return exchange


def sim_exchange(conn_factory: Callable[[Callable[[bytes], None]], XsConnection]) -> Exchange:
    out: list[bytes] = []
    conn = conn_factory(out.append)

    def exchange(data: bytes) -> list[Message]:
        out.clear()
        conn.receive(data)
        got: list[Message] = []
        assert until_marker(wire.Decoder(), b"".join(out), got)
        return got

    return exchange


@pytest.fixture
def real() -> Iterator[Callable[[list[Step]], list[tuple[str, list[Message]]]]]:
    def run(steps: list[Step]) -> list[tuple[str, list[Message]]]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(DAEMON)
            exchange = real_exchange(sock)
            play(exchange, CLEANUP)
            try:
                return play(exchange, steps)
            finally:
                play(exchange, CLEANUP)

    yield run


def sim(steps: list[Step]) -> list[tuple[str, list[Message]]]:
    store = Xenstored()
    store.ensure_domain(0)
    return play(sim_exchange(lambda send: XsConnection(store, 0, send)), steps)


@pytest.mark.parametrize("name", list(CASES))
def test_vchansim_answers_each_case_as_xen_4_17(real, name: str) -> None:
    steps = CASES[name]
    theirs, ours = real(steps), sim(steps)
    differences = [
        f"{what}\n  xenstored: {their}\n  vchansim:  {our}"
        for (what, their), (_, our) in zip(theirs, ours, strict=True)
        if their != our
    ]
    assert not differences, "\n".join(differences)
