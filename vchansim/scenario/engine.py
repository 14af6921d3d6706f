"""An endpoint's I/O loop: send and receive until both directions are done.

A blocking endpoint that has one direction to serve makes plain blocking calls -- they
really block, which is the behaviour under test.  One with both directions live only
calls what cannot block (reads when data is ready, writes that fit) and waits on the
event channel otherwise, as any single-threaded duplex program must.  Faults due at a
byte offset or a time are fired from here, at the exact point they name.
"""

from __future__ import annotations

import errno
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from .. import layout
from ..channel import LIVENESS_RECHECK
from ..errors import ChannelClosed
from .faults.base import Fault
from .messages import Connected, Progress, ReceivedReport, StreamReport
from .spec import Workload
from .traffic import EchoQueue, Inbox, OwnStream

if TYPE_CHECKING:
    from .endpoint import Endpoint

#: Seconds between progress reports while traffic flows.
PROGRESS_PERIOD = 0.05
#: An echoing endpoint stops reading while this much is waiting to go back.
ECHO_BACKLOG = 1 << 20


class Engine:
    """The I/O loop of one endpoint instance (see the module's docstring)."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep
        self.chan = ep.chan
        s, name = ep.scenario, ep.spec.name
        work: Workload = ep.spec.workload
        self.packets = work.mode == "packets"
        first = ep.job.instance == 1
        tx_start = 0 if first else self._resume_offset(self.chan.write_ring.prod)
        rx_start = 0 if first else self._resume_offset(self.chan.read_ring.cons)
        self.out: OwnStream | EchoQueue | None = None
        if work.echo:
            self.out = EchoQueue(s.peer(name).name, rx_start, self.packets)
        elif work.sends_own:
            self.out = OwnStream(s, name, tx_start, self.packets)
        self.inbox = Inbox(s, name, rx_start, self.packets) if s.receives(name) else None
        self.write_pause = work.write_pause
        self.stall_until = 0.0
        self.last_progress = time.monotonic()
        self._reported = 0.0
        ep.link.emit(Connected(sent=tx_start, received=rx_start))

    def _resume_offset(self, index: int) -> int:
        return (index - self.ep.scenario.server.start_index) & layout.U32

    # -- state --

    def tx_done(self) -> bool:
        if isinstance(self.out, EchoQueue):
            return self.out.empty() and self.rx_done()
        return self.out is None or self.out.done()

    def rx_target(self) -> int | None:
        """The stream offset where reading stops, once known (see Scenario.rx_stop)."""
        assert self.inbox is not None
        stop = self.inbox.stop
        if isinstance(stop, int):
            return stop
        if stop == "own" and isinstance(self.out, OwnStream) and self.out.done():
            return self.out.offset
        return None

    def rx_done(self) -> bool:
        return self.inbox is None or self.inbox.done(self.rx_target())

    def finished(self) -> bool:
        return self.ep.stopped is not None or (self.tx_done() and self.rx_done())

    def stall(self, duration: float) -> None:
        self.stall_until = time.monotonic() + duration

    def _gated(self) -> bool:
        """Both directions live on a blocking channel: avoid calls that would block."""
        return self.chan.blocking and not self.tx_done() and not self.rx_done()

    def _open(self) -> bool:
        return bool(self.chan.is_open())

    # -- the loop --

    def run(self) -> None:
        if self.out is not None:
            self.out.begin()
        self._fire(self.ep.triggers.due_bytes("sent", self._sent_offset()))
        self._fire(self.ep.triggers.due_bytes("received", self._received_offset()))
        while True:
            self._fire(self.ep.triggers.due_time(time.monotonic() - self.ep.connected_at))
            if self.finished():
                break
            moved = self._send_step() if not self.tx_done() else False
            if self._can_receive():
                moved = self._receive_step() or moved
            if moved:
                self.last_progress = time.monotonic()
            else:
                self._idle()
            self._report()
        if self.ep.stopped is None:
            self._await_client()
        self._report(force=True)

    def _await_client(self) -> None:
        """A server that is done before its client even connected waits for it: closing
        under a client that is connecting would fail the client, not test the channel."""
        while self.ep.spec.is_server and self.chan.is_open() == layout.LIVE_WAITING:
            self._idle()

    def _fire(self, faults: list[Fault]) -> None:
        for fault in faults:
            self.ep.fire(fault)

    def _sent_offset(self) -> int:
        return self.out.offset if self.out is not None else 0

    def _received_offset(self) -> int:
        return self.inbox.offset if self.inbox is not None else 0

    def _can_receive(self) -> bool:
        if self.rx_done() or time.monotonic() < self.stall_until:
            return False
        return not (isinstance(self.out, EchoQueue) and self.out.backlog >= ECHO_BACKLOG)

    def _send_step(self) -> bool:
        assert self.out is not None
        chunk = self.out.next(self.ep.triggers.room("sent", self.out.offset))
        if chunk is None:
            return False
        if self._gated() and self._open():
            space = self.chan.buffer_space()
            if space < (len(chunk) if self.packets else 1):
                return False
            chunk = chunk if self.packets else chunk[:space]
        try:
            n = self.chan.send(chunk) if self.packets else self.chan.write(chunk)
        except ChannelClosed as exc:
            self._sent(exc.written)
            self.ep.saw_peer_close()
            raise
        except TimeoutError as exc:
            self._sent(getattr(exc, "characters_written", 0))
            raise
        self._sent(n)
        return n > 0

    def _sent(self, n: int) -> None:
        assert self.out is not None
        if n:
            self.out.advance(n)
            self._fire(self.ep.triggers.due_bytes("sent", self.out.offset))
            if self.write_pause:
                time.sleep(self.write_pause)

    def _receive_step(self) -> bool:
        inbox = self.inbox
        assert inbox is not None
        want = inbox.want(self.ep.triggers.room("received", inbox.offset), self.rx_target())
        if self._gated() and self._open():
            ready = self.chan.data_ready()
            if ready < (want if self.packets else 1):
                return False
        view = memoryview(inbox.buf)
        try:
            receive = self.chan.recv_into if self.packets else self.chan.read_into
            n = receive(view, want)
        except ChannelClosed:
            self.ep.saw_peer_close()
            if inbox.stop != "close":
                raise
            inbox.closed = True
            return True
        if n:
            self._received(view[:n])
        return n > 0

    def _received(self, data: memoryview) -> None:
        inbox = self.inbox
        assert inbox is not None
        if isinstance(self.out, EchoQueue):
            self.out.push(data)
        inbox.take(data)
        if inbox.pause:
            time.sleep(inbox.pause)
        self._fire(self.ep.triggers.due_bytes("received", inbox.offset))

    def _idle(self) -> None:
        now = time.monotonic()
        if now < self.stall_until:
            self.last_progress = now  # standing still on purpose is not a hang
        if now - self.last_progress > self.ep.timeout:
            raise TimeoutError(errno.ETIMEDOUT, f"no progress for {self.ep.timeout:g} s")
        bounds = [LIVENESS_RECHECK, self.last_progress + self.ep.timeout - now]
        if now < self.stall_until:
            bounds.append(self.stall_until - now)
        due = self.ep.triggers.next_time()
        if due is not None:
            bounds.append(self.ep.connected_at + due - now)
        self.chan.wait(max(0.0, min(bounds)))

    # -- reports --

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._reported < PROGRESS_PERIOD:
            return
        self._reported = now
        self.ep.link.emit(
            Progress(
                sent=self._sent_offset(),
                received=self._received_offset(),
                mismatch_at=self.inbox.check.mismatch_at if self.inbox else None,
                events=asdict(self.ep.tap.counts),
            )
        )

    def sent_report(self) -> StreamReport | None:
        out = self.out
        if out is None:
            return None
        return {
            "stream": out.stream_name,
            "start": out.start,
            "count": out.offset - out.start,
            "sha256": out.sha.hexdigest(),
        }

    def received_report(self) -> ReceivedReport | None:
        inbox = self.inbox
        if inbox is None:
            return None
        check = inbox.check
        return {
            "stream": inbox.origin,
            "start": check.start,
            "count": check.count,
            "sha256": check.hexdigest(),
            "mismatch_at": check.mismatch_at,
            "closed": inbox.closed,
        }
