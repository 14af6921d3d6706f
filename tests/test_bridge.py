"""The stdin/stdout pump behind ``vchansim serve``/``connect``, over real pipes: every
session ends, and its tally says whether every byte was delivered both ways."""

from __future__ import annotations

import hashlib
import os
import threading

from vchansim.backends.memory import MemoryBackend, MemoryHypervisor
from vchansim.bridge import Ending, Tally, bridge
from vchansim.channel import Vchan

DEADLINE = 30.0


class Side:
    """One end: a vchan bridged to an input pipe we feed and an output pipe we collect."""

    def __init__(
        self,
        chan: Vchan,
        ending: Ending,
        patience: float = DEADLINE,
        *,
        given: bytes = b"",
        collect: bool = True,
    ) -> None:
        """``given`` is in the input before the bridge starts (at most a pipe's 64 KiB);
        without ``collect`` nobody reads the output."""
        self.chan = chan
        self.ending, self.patience = ending, patience
        self.in_r, self.in_w = os.pipe()
        self.out_r, self.out_w = os.pipe()
        self.received = bytearray()
        self.got_enough = threading.Event()
        self.expect = -1
        self.tally: Tally | None = None
        self.send(given)
        self.pump = threading.Thread(target=self._pump)
        self.collector = threading.Thread(target=self._collect)
        self.pump.start()
        if collect:
            self.collector.start()
        else:
            os.close(self.out_r)

    def _pump(self) -> None:
        self.tally = bridge(
            self.chan, self.in_r, self.out_w, ending=self.ending, patience=self.patience
        )
        self.chan.close()
        os.close(self.in_r)
        os.close(self.out_w)

    def _collect(self) -> None:
        while chunk := os.read(self.out_r, 65536):
            self.received += chunk
            if len(self.received) >= self.expect >= 0:
                self.got_enough.set()
        os.close(self.out_r)
        self.got_enough.set()

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.in_w, view) :]

    def end_input(self) -> None:
        os.close(self.in_w)

    def finish(self) -> Tally:
        self.pump.join(DEADLINE)
        if self.collector.ident is not None:
            self.collector.join(DEADLINE)
        assert not self.pump.is_alive(), "the bridge never ended"
        assert self.tally is not None
        return self.tally


def pair(read_min: int = 0, write_min: int = 0) -> tuple[Vchan, Vchan]:
    hv = MemoryHypervisor()
    srv = Vchan.server(MemoryBackend(1, hypervisor=hv), 0, "data/pipe", read_min, write_min)
    cli = Vchan.client(MemoryBackend(0, hypervisor=hv), 1, "/local/domain/1/data/pipe")
    return srv, cli


def sessions(read_min: int = 0, write_min: int = 0) -> tuple[Side, Side]:
    """The defaults of serve and connect: the server closes, the client receives."""
    srv, cli = pair(read_min, write_min)
    return Side(srv, Ending.CLOSE), Side(cli, Ending.RECEIVE)


def digest(data: bytes | bytearray) -> bytes:
    return hashlib.sha256(data).digest()


def test_a_receiving_end_whose_input_is_empty_gets_everything_the_closing_end_sent():
    server, client = sessions()
    client.end_input()  # `connect </dev/null`: it must go on receiving
    payload = os.urandom(3 << 20)
    server.send(payload)
    server.end_input()
    srv, cli = server.finish(), client.finish()
    assert digest(client.received) == digest(payload)
    assert srv.delivered and cli.delivered, (srv, cli)
    assert (srv.read, srv.sent, srv.unread) == (len(payload), len(payload), 0)
    assert cli.peer_closed and (cli.received, cli.written) == (len(payload), len(payload))


def test_both_directions_through_small_rings_deliver_everything():
    server, client = sessions(4096, 4096)
    up, down = os.urandom(2 << 20), os.urandom(2 << 20)
    server.expect = len(up)
    senders = [
        threading.Thread(target=lambda: (client.send(up), client.end_input())),
        threading.Thread(target=server.send, args=(down,)),
    ]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(DEADLINE)
    assert server.got_enough.wait(DEADLINE)
    server.end_input()  # now the server may close: once the client has read all of down
    srv, cli = server.finish(), client.finish()
    assert bytes(server.received) == up and bytes(client.received) == down
    assert srv.delivered and cli.delivered, (srv, cli)


def test_a_server_closing_before_the_client_sent_its_input_counts_it_as_not_sent():
    """``serve </dev/null`` against a client with input: the server closes once the
    client has read its nothing, and the client says what it could not send."""
    srv_chan, cli_chan = pair()
    server = Side(srv_chan, Ending.CLOSE)
    server.end_input()
    assert server.finish().delivered
    client = Side(cli_chan, Ending.RECEIVE, given=os.urandom(65536))
    tally = client.finish()
    client.end_input()
    assert tally.peer_closed and not tally.delivered
    assert (tally.read, tally.sent) == (65536, 0)
    assert tally.describe().startswith("the peer closed first: 65536 bytes read from input")


def test_bytes_the_peer_never_read_are_counted_as_unread():
    srv_chan, cli_chan = pair()
    client = Side(cli_chan, Ending.RECEIVE)
    client.send(b"q" * 1000)
    client.end_input()
    while srv_chan.data_ready() < 1000:  # everything is in the ring, unread
        srv_chan.wait(1)
    srv_chan.read(10)
    srv_chan.close()  # the server leaves without reading the rest
    tally = client.finish()
    assert (tally.read, tally.sent, tally.unread) == (1000, 1000, 990)
    assert not tally.delivered
    assert "990 sent but not read by the peer" in tally.describe()


def test_a_closing_end_gives_up_on_a_peer_that_reads_nothing_for_its_patience():
    srv_chan, cli_chan = pair()
    server = Side(srv_chan, Ending.CLOSE, patience=0.2)
    server.send(b"w" * 100)
    server.end_input()
    tally = server.finish()  # the client never reads: only the patience ends this
    assert tally.unread == 100 and not tally.delivered
    assert tally.describe().startswith("the peer read nothing for 0.2 s: ")
    cli_chan.close()


def test_an_output_that_fails_ends_the_session_and_is_counted():
    srv_chan, cli_chan = pair()
    client = Side(cli_chan, Ending.RECEIVE, collect=False)  # as `| head -c 0` would
    srv_chan.write(b"r" * 500)
    tally = client.finish()
    assert tally.trouble == "writing the output failed: Broken pipe"
    assert (tally.received, tally.written) == (500, 0) and not tally.delivered
    client.end_input()
    srv_chan.close()
