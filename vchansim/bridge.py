"""Copy bytes both ways between a vchan and a pair of file descriptors.

This is what ``vchansim serve``/``connect`` do with stdin/stdout, like Xen's vchan-node
tools: one ``select`` loop, the vchan in non-blocking mode, so neither direction can
starve the other.  End of input closes the channel once everything read from it is in
the ring (the peer can still drain it); the peer's close ends the loop once everything it
wrote has been delivered.
"""

from __future__ import annotations

import os
import select

from .channel import Vchan
from .errors import ChannelClosed

CHUNK = 65536


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


class _Outbound:
    """Bytes read from the input but not yet in the ring."""

    def __init__(self) -> None:
        self.buf = bytearray(CHUNK)
        self.start = self.end = 0
        self.eof = False

    @property
    def pending(self) -> bool:
        return self.start < self.end

    def fill(self, fd: int) -> None:
        got = os.readv(fd, [memoryview(self.buf)])
        self.start, self.end = 0, got
        self.eof = got == 0

    def push(self, chan: Vchan) -> None:
        self.start += chan.write(memoryview(self.buf)[self.start : self.end])


def bridge(chan: Vchan, in_fd: int | None, out_fd: int) -> None:
    """Pump ``in_fd`` -> ``chan`` and ``chan`` -> ``out_fd`` until one side ends.

    ``in_fd`` None means nothing to send (receive only).  Returns after closing nothing:
    the caller owns the channel and the descriptors.
    """
    chan.blocking = False
    outbound = _Outbound()
    outbound.eof = in_fd is None
    inbound = bytearray(CHUNK)
    view = memoryview(inbound)
    try:
        while True:
            while got := chan.read_into(inbound):
                _write_all(out_fd, view[:got])
            if outbound.pending:
                outbound.push(chan)
            if outbound.eof and not outbound.pending:
                return
            # Arm the notifications, then look again: what the peer did in between would
            # otherwise send no event and leave us asleep.
            if chan.data_ready() or (outbound.pending and chan.buffer_space()):
                continue
            watch = [chan.fileno()]
            if not outbound.pending and in_fd is not None:
                watch.append(in_fd)
            readable, _, _ = select.select(watch, [], [])
            if chan.fileno() in readable:
                chan.wait(0)
            if in_fd is not None and in_fd in readable:
                outbound.fill(in_fd)
    except ChannelClosed:
        return
