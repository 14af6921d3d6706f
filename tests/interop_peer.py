"""One Python vchan endpoint, with the command line and output of ``csrc/programs/vchan-pipe.c``.

The interop tests start either program for either end, so every pairing of Python and
Debian's libxenvchan is driven and checked the same way.  Usage (run with the emulator's
environment, as ``vchansim exec`` gives it: ``VCHANSIM_DOMID``, ``VCHANSIM_RUNDIR``)::

    python tests/interop_peer.py server|client PEER_DOMID PATH [--send N] [--recv N]
        [--packet SIZE] [--read-min N] [--write-min N] [--seed N] [--hold | --linger]

Output, one flushed line per event: ``ready core=NAME`` (the core the ring runs on,
``c`` or ``python``: ``VCHANSIM_PURE=1`` selects the latter); ``sent N SHA256
SECONDS``; ``received N SHA256 SECONDS``; ``closed`` (the peer closed or died; then
``is_open()`` is 0 and a read raises ChannelClosed, which the line confirms).  Exit
status as vchan-pipe's: 0 done, 2 init failed, 3 the peer closed before all bytes moved.

``--linger`` (not in vchan-pipe): when done, keep the channel open until standard input
reaches end-of-file, then close it -- so a test decides when the close happens, e.g.
only after a relay such as vchan-socket-proxy has drained the ring.

The sent data are ``random.Random(seed).randbytes`` blocks -- not vchan-pipe's xorshift
stream, which pure Python generates too slowly for 64 MiB -- so a receiver checks them by
the SHA-256 the sender prints, never by regenerating them.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import select
import sys
import time

from vchansim import core
from vchansim.backends.shm import ShmBackend
from vchansim.channel import Vchan
from vchansim.errors import ChannelClosed, VchanError

#: Bytes generated at a time (a whole number of packets in packet mode).
BLOCK = 1 << 20
#: How long an idle endpoint sleeps before re-checking the peer's liveness anyway.
RECHECK = 0.5
EXIT_INIT, EXIT_CLOSED = 2, 3


class Flow:
    """One direction's progress: count, running SHA-256, and first/last byte times."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.hash = hashlib.sha256()
        self.first = self.last = 0.0

    @property
    def pending(self) -> bool:
        return self.done < self.total

    def moved(self, data: memoryview) -> None:
        now = time.monotonic()
        if self.done == 0:
            self.first = now
        self.last = now
        self.hash.update(data)
        self.done += len(data)

    def report(self, what: str) -> None:
        print(what, self.done, self.hash.hexdigest(), f"{self.last - self.first:.6f}", flush=True)


class Sender:
    """Moves ``total`` seeded random bytes into the channel, as much as fits per call."""

    def __init__(self, total: int, seed: int, packet: int) -> None:
        self.flow = Flow(total)
        self.packet = packet
        self._rng = random.Random(seed)
        self._block = memoryview(b"")
        self._off = 0
        self._per_block = BLOCK - BLOCK % packet if packet else BLOCK

    def _refill(self) -> None:
        size = min(self._per_block, self.flow.total - self.flow.done)
        self._block = memoryview(self._rng.randbytes(size))
        self._off = 0

    def pump(self, chan: Vchan) -> int:
        """Bytes moved now (0: no room); raises ChannelClosed if the peer has gone."""
        if self._off == len(self._block):
            self._refill()
        rest = self._block[self._off :]
        if self.packet:
            piece = rest[: self.packet]
            n = chan.send(piece)
        else:
            n = chan.write(rest)
        if n:
            self.flow.moved(rest[:n])
            self._off += n
        return n


class Receiver:
    """Takes ``total`` bytes out of the channel, hashing them as they come."""

    def __init__(self, total: int, packet: int) -> None:
        self.flow = Flow(total)
        self.packet = packet
        self._buf = memoryview(bytearray(max(packet, BLOCK)))

    def pump(self, chan: Vchan) -> int:
        """Bytes moved now (0: nothing there yet); raises ChannelClosed if the peer has gone."""
        want = min(len(self._buf), self.flow.total - self.flow.done)
        if self.packet:
            n = chan.recv_into(self._buf, min(self.packet, want))
        else:
            n = chan.read_into(self._buf, want)
        if n:
            self.flow.moved(self._buf[:n])
        return n


def sleep_for_event(chan: Vchan) -> None:
    """Wait for the channel's event (or the liveness re-check period), then consume it."""
    select.select([chan.fileno()], [], [], RECHECK)
    chan.wait(0)


def confirm_closed(chan: Vchan) -> None:
    """Print ``closed`` with what the API reports of a peer that has gone."""
    try:
        chan.read(1)
        outcome = "data"
    except ChannelClosed:
        outcome = "ChannelClosed"
    print("closed", f"is_open={chan.is_open()}", f"read={outcome}", flush=True)


def run(chan: Vchan, out: Sender, inp: Receiver, hold: bool) -> int:
    """Move both directions at once until done (and, with ``hold``, until the peer goes);
    0 when done, EXIT_CLOSED when the peer closed first."""
    reported = {"sent": out.flow.total == 0, "received": inp.flow.total == 0}
    while True:
        progress = 0
        try:
            if out.flow.pending:
                progress += out.pump(chan)
            if inp.flow.pending:
                progress += inp.pump(chan)
        except ChannelClosed:
            confirm_closed(chan)
            return 0 if not (out.flow.pending or inp.flow.pending) else EXIT_CLOSED
        for word, flow in (("sent", out.flow), ("received", inp.flow)):
            if not reported[word] and not flow.pending:
                flow.report(word)
                reported[word] = True
        finished = not (out.flow.pending or inp.flow.pending)
        if finished and not hold:
            return 0
        if finished and chan.is_open() == 0:
            confirm_closed(chan)
            return 0
        if not progress:
            sleep_for_event(chan)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="interop_peer", description=__doc__.split("\n")[0])
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("peer", type=int)
    parser.add_argument("path")
    for name in ("send", "recv", "packet", "read-min", "write-min", "seed"):
        parser.add_argument(f"--{name}", type=int, default=0)
    ending = parser.add_mutually_exclusive_group()
    ending.add_argument("--hold", action="store_true")
    ending.add_argument("--linger", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    backend = ShmBackend()
    try:
        if args.role == "server":
            chan = Vchan.server(
                backend, args.peer, args.path, args.read_min, args.write_min, blocking=False
            )
        else:
            chan = Vchan.client(backend, args.peer, args.path, blocking=False)
    except VchanError as exc:
        print(f"interop_peer: {args.role} init failed: {exc}", file=sys.stderr)
        return EXIT_INIT
    seed = args.seed or (1 if args.role == "server" else 2)
    with chan:
        print("ready", f"core={core.NAME}", flush=True)
        status = run(
            chan, Sender(args.send, seed, args.packet), Receiver(args.recv, args.packet), args.hold
        )
        if args.linger and status == 0:
            sys.stdin.read()  # until the test closes our standard input
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
