"""Copy bytes both ways between a vchan and a pair of file descriptors, and account for them.

This is what ``vchansim serve``/``connect`` do with stdin/stdout, like Xen's vchan-node
tools: one ``select`` loop, the vchan in non-blocking mode, so neither direction can
starve the other.

The vchan protocol has no half-close: an end can only close the whole channel, and what
the peer has not read by then is lost.  So at the end of input the bridge stops sending
and goes on receiving, and one of the two ends has to decide when the session is over
(:class:`Ending`).  Whatever happens, the :class:`Tally` it returns says whether every
byte was delivered both ways, and if not, how many were not.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import time
from dataclasses import dataclass
from enum import StrEnum

from . import layout
from .channel import LIVENESS_RECHECK, Vchan
from .errors import ChannelClosed

CHUNK = 65536


class Ending(StrEnum):
    """What an end does once its input has ended and all of it is in the ring."""

    #: Keep receiving until the peer closes (``nc``'s behaviour; ``connect``'s default).
    RECEIVE = "receive"
    #: Keep receiving until the peer has consumed everything sent, then close
    #: (``serve``'s default).  A server first waits for its client to come.
    CLOSE = "close"


@dataclass
class Tally:
    """What one bridged session moved, and what it failed to.

    ``read`` bytes came from the input, ``sent`` of them went into the ring, ``unread`` of
    those the peer had not consumed when the session ended; ``received`` came out of the
    ring, ``written`` of them reached the output.  ``trouble`` names what cut the session
    short on our side (an input or output error, a peer too slow to consume), if anything;
    ``peer_closed`` says the peer ended the session.
    """

    read: int = 0
    sent: int = 0
    unread: int = 0
    received: int = 0
    written: int = 0
    trouble: str = ""
    peer_closed: bool = False

    @property
    def delivered(self) -> bool:
        """Every byte read was consumed by the peer, every byte received was output."""
        lost = self.read - self.sent + self.unread + self.received - self.written
        return not self.trouble and not lost

    def describe(self) -> str:
        """One line with the counts; the cause first when there is one."""
        counts = (
            f"{self.read - self.sent} bytes read from input not sent, {self.unread} sent but "
            f"not read by the peer, {self.received - self.written} received but not output "
            f"(read {self.read}, sent {self.sent}, received {self.received}, "
            f"output {self.written})"
        )
        cause = self.trouble or (
            "the peer closed first" if self.peer_closed else "not everything was delivered"
        )
        return f"{cause}: {counts}"


class _Outbound:
    """Bytes read from the input but not yet in the ring."""

    def __init__(self, tally: Tally) -> None:
        self.buf = bytearray(CHUNK)
        self.start = self.end = 0
        self.eof = False
        self._tally = tally

    @property
    def pending(self) -> bool:
        return self.start < self.end

    def fill(self, fd: int) -> None:
        try:
            got = os.readv(fd, [memoryview(self.buf)])
        except OSError as exc:
            self._tally.trouble = f"reading the input failed: {exc.strerror}"
            got = 0
        self.start, self.end = 0, got
        self.eof = got == 0
        self._tally.read += got

    def probe(self, fd: int | None) -> None:
        """At the peer's close: take what the input holds right now, if nothing is
        pending, so that input the session never got to is counted as not sent."""
        if (
            fd is not None
            and not self.eof
            and not self.pending
            and select.select([fd], [], [], 0)[0]
        ):
            self.fill(fd)

    def push(self, chan: Vchan) -> None:
        n = chan.write(memoryview(self.buf)[self.start : self.end])
        self.start += n
        self._tally.sent += n


class _Closing:
    """When an :attr:`Ending.CLOSE` end, its input all in the ring, may close: once its
    peer is there and has consumed everything -- or has consumed nothing for
    ``patience`` seconds (a peer that keeps reading keeps it waiting)."""

    def __init__(self, patience: float) -> None:
        self.patience = patience
        self.unread = -1
        self.deadline = math.inf

    def due(self, chan: Vchan, tally: Tally) -> float:
        """0 when it is time to close; else how long to sleep at most before looking
        again.  Arms the READ notification, so the peer's progress wakes us."""
        if chan.is_open() == layout.LIVE_WAITING:
            return LIVENESS_RECHECK  # a server whose client has not come yet
        unread = chan.drain(0)
        if unread != self.unread:
            self.unread, self.deadline = unread, time.monotonic() + self.patience
        if not unread:
            return 0.0
        left = self.deadline - time.monotonic()
        if left <= 0:
            tally.trouble = f"the peer read nothing for {self.patience:g} s"
            return 0.0
        return min(LIVENESS_RECHECK, left)


class _Inbound:
    """The ring's bytes on their way to the output."""

    def __init__(self, tally: Tally) -> None:
        self.buf = bytearray(CHUNK)
        self._tally = tally

    def pump(self, chan: Vchan, fd: int) -> bool:
        """Move everything the ring holds to ``fd``; False if the output failed (the
        cause is in the tally).  Raises ChannelClosed once the peer closed and all its
        data is out."""
        view = memoryview(self.buf)
        while got := chan.read_into(self.buf):
            self._tally.received += got
            data = view[:got]
            try:
                while data:
                    n = os.write(fd, data)
                    self._tally.written += n
                    data = data[n:]
            except OSError as exc:
                self._tally.trouble = f"writing the output failed: {exc.strerror}"
                return False
        return True


def bridge(
    chan: Vchan,
    in_fd: int | None,
    out_fd: int,
    *,
    ending: Ending = Ending.RECEIVE,
    patience: float = 10.0,
) -> Tally:
    """Pump ``in_fd`` -> ``chan`` and ``chan`` -> ``out_fd`` until the session ends.

    It ends when the peer closes (once everything it wrote is output), when the input
    or the output fails, or -- after the input ended (``in_fd`` None: nothing to send)
    and all of it is in the ring -- as ``ending`` says; an :attr:`Ending.CLOSE` end
    gives up when its peer consumed nothing for ``patience`` seconds.  Closes nothing:
    the caller owns the channel and the descriptors.
    """
    chan.blocking = False
    tally = Tally()
    inbound, outbound = _Inbound(tally), _Outbound(tally)
    outbound.eof = in_fd is None
    closing = _Closing(patience) if ending is Ending.CLOSE else None
    try:
        while inbound.pump(chan, out_fd) and not tally.trouble:
            if outbound.pending:
                outbound.push(chan)
            timeout = LIVENESS_RECHECK
            if closing is not None and outbound.eof and not outbound.pending:
                timeout = closing.due(chan, tally)
                if timeout <= 0:
                    inbound.pump(chan, out_fd)  # what came meanwhile, before we close
                    break
            # Arm the notifications, then look again: what the peer did in between would
            # otherwise send no event and leave us asleep.
            if chan.data_ready() or (outbound.pending and chan.buffer_space()):
                continue
            watch = [chan.fileno()]
            if not outbound.pending and not outbound.eof and in_fd is not None:
                watch.append(in_fd)
            readable, _, _ = select.select(watch, [], [], timeout)
            if chan.fileno() in readable:
                chan.wait(0)
            if in_fd is not None and in_fd in readable:
                outbound.fill(in_fd)
    except ChannelClosed:
        tally.peer_closed = True
        _last_words(chan, inbound, out_fd)
        outbound.probe(in_fd)
    tally.unread = chan.drain(0)
    return tally


def _last_words(chan: Vchan, inbound: _Inbound, out_fd: int) -> None:
    """The peer closed, seen perhaps by a write with data still in our ring: output all
    of it (reading a closed peer's ring raises ChannelClosed once it is empty)."""
    with contextlib.suppress(ChannelClosed):
        inbound.pump(chan, out_fd)
