"""The stdin/stdout pump behind ``vchansim serve``/``connect``, over real pipes."""

from __future__ import annotations

import hashlib
import os
import threading

from vchansim.backends.memory import MemoryBackend, MemoryHypervisor
from vchansim.bridge import bridge
from vchansim.channel import Vchan


class Side:
    """One end: a vchan bridged to an input pipe we feed and an output pipe we collect."""

    def __init__(self, chan: Vchan) -> None:
        self.chan = chan
        self.in_r, self.in_w = os.pipe()
        self.out_r, self.out_w = os.pipe()
        self.received = bytearray()
        self.got_enough = threading.Event()
        self.expect = -1
        self.pump = threading.Thread(target=self._pump)
        self.collector = threading.Thread(target=self._collect)
        self.pump.start()
        self.collector.start()

    def _pump(self) -> None:
        bridge(self.chan, self.in_r, self.out_w)
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

    def finish(self) -> None:
        self.pump.join()
        self.collector.join()


def pair(read_min: int = 0, write_min: int = 0) -> tuple[Side, Side]:
    hv = MemoryHypervisor()
    srv = Vchan.server(MemoryBackend(1, hypervisor=hv), 0, "data/pipe", read_min, write_min)
    cli = Vchan.client(MemoryBackend(0, hypervisor=hv), 1, "/local/domain/1/data/pipe")
    return Side(srv), Side(cli)


def test_end_of_input_closes_after_everything_arrived():
    server, client = pair()
    payload = os.urandom(3 << 20)
    sender = threading.Thread(target=lambda: (client.send(payload), client.end_input()))
    sender.start()
    sender.join()
    client.finish()  # the client's bridge returns once its input ended and all is in the ring
    server.finish()  # the server's bridge returns at the client's close, after draining
    assert hashlib.sha256(server.received).digest() == hashlib.sha256(payload).digest()
    server.end_input()


def test_both_directions_at_once_through_small_rings():
    server, client = pair(4096, 4096)
    up, down = os.urandom(2 << 20), os.urandom(2 << 20)
    server.expect, client.expect = len(up), len(down)
    senders = [
        threading.Thread(target=client.send, args=(up,)),
        threading.Thread(target=server.send, args=(down,)),
    ]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join()
    server.got_enough.wait()
    client.got_enough.wait()
    assert bytes(server.received) == up
    assert bytes(client.received) == down
    client.end_input()
    client.finish()
    server.finish()  # the server's bridge ends when the client closes
    server.end_input()
