"""What one endpoint does: open its end of the vchan, drive its workload, commit or
suffer its faults, and tell the runner everything as it happens.

An endpoint is a process of its own (or, on the in-process backend, a thread), joined to
the runner by a pipe.  It reports as it goes rather than only at the end, because the
point of many scenarios is that it may die: whatever it said before it died is what the
runner has.  Messages are small dicts with ``ev`` (what happened) and ``t`` (when, on the
system-wide monotonic clock, so the runner can compare times across processes).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .. import layout
from ..backends.base import Backend
from ..channel import LIVENESS_RECHECK, Vchan
from ..errors import ChannelClosed
from .faults import EventTap, TappedBackend, corrupt, set_indices
from .model import (
    CloseFault,
    CorruptFault,
    Fault,
    KillFault,
    NotifyFault,
    RestartFault,
    Scenario,
    StallFault,
    Trigger,
    Workload,
)
from .streams import StreamCheck, sizes

U32 = 0xFFFFFFFF
#: Seconds between progress reports while traffic flows.
PROGRESS_PERIOD = 0.05
#: An echoing endpoint stops reading while this much is waiting to go back.
ECHO_BACKLOG = 1 << 20


@dataclass(frozen=True)
class EndpointJob:
    """Everything an endpoint process needs; pickled to it when it is spawned."""

    scenario: Scenario
    name: str
    backends: Callable[[int], Backend]  # domid -> backend
    instance: int = 1
    program: tuple[str, ...] = ()  # a program endpoint's command, ready to run


class Link:
    """The endpoint's line to the runner: events out, commands (``go``/``abort``) in."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def emit(self, ev: str, **fields: Any) -> None:
        fields.update(ev=ev, t=time.monotonic())
        with contextlib.suppress(OSError, EOFError):  # the runner is gone: nobody to tell
            self._conn.send(fields)

    def command(self, timeout: float) -> str | None:
        """The runner's next command, or None after ``timeout`` or once it is gone."""
        try:
            if self._conn.poll(max(0.0, timeout)):
                return str(self._conn.recv())
        except (OSError, EOFError):
            pass
        return None

    def fileno(self) -> int:
        """Readable when a command (or the runner's end-of-file) is waiting."""
        return int(self._conn.fileno())


def describe_error(exc: BaseException, phase: str) -> dict[str, Any]:
    """An exception as the runner records it (it cannot receive the object itself)."""
    code = getattr(exc, "errno", None)
    return {
        "type": type(exc).__name__,
        "mro": [c.__name__ for c in type(exc).__mro__],
        "errno": errno.errorcode.get(code) if isinstance(code, int) else None,
        "message": str(exc),
        "phase": phase,
        "where": "".join(traceback.format_tb(exc.__traceback__, limit=-3)).rstrip(),
    }


class Aborted(Exception):
    """The endpoint is not to start (its server failed); the message says why."""


def await_go(link: Link, timeout: float, is_server: bool) -> None:
    """Wait for the runner: a client starts only once its server listens."""
    command = link.command(timeout)
    if command == "abort":
        raise Aborted("its server failed" if not is_server else "aborted")
    if command != "go":
        raise Aborted(f"no word from the runner in {timeout:g} s")


def channel_keys(backend: Backend, path: str) -> tuple[int, int]:
    """The grant reference of the control page and the event port, as the server
    published them under ``path``."""
    store = backend.store()
    try:
        ring_ref, port = (
            int(store.read(layout.key_path(path, key)))
            for key in (layout.RING_REF_KEY, layout.EVENT_CHANNEL_KEY)
        )
    finally:
        store.close()
    return ring_ref, port


# -- one-shot faults inside the endpoint ------------------------------------------------------


class Triggers:
    """This endpoint's own faults, by what sets them off.

    One-shot faults act in the first instance of an endpoint only: a restarted client
    resumes past the offsets that triggered them.  Notify faults act in every instance.
    """

    def __init__(self, scenario: Scenario, name: str, instance: int) -> None:
        faults = [
            f
            for f in scenario.faults_of(name)
            if not f.by_runner
            and (instance == 1 or isinstance(f, NotifyFault))
            and f.trigger != Trigger()  # untriggered notify faults act from the start
        ]
        self.setup = [f for f in faults if f.trigger.setup]
        self.timed = sorted((f for f in faults if f.trigger.at is not None), key=_at)
        self.bytes: dict[str, list[tuple[int, Fault]]] = {"sent": [], "received": []}
        for fault in faults:
            offset = fault.trigger.byte_offset
            if offset is not None:
                self.bytes[offset[0]].append((offset[1], fault))
        for queue in self.bytes.values():
            queue.sort(key=lambda item: item[0])

    def room(self, kind: str, offset: int) -> int | None:
        """Bytes until the next ``kind`` trigger, so a chunk can stop exactly on it."""
        ahead = [at - offset for at, _ in self.bytes[kind] if at > offset]
        return min(ahead, default=None)

    def due_bytes(self, kind: str, offset: int) -> list[Fault]:
        queue = self.bytes[kind]
        due = [fault for at, fault in queue if at <= offset]
        del queue[: len(due)]
        return due

    def due_time(self, elapsed: float) -> list[Fault]:
        due = [f for f in self.timed if _at(f) <= elapsed]
        del self.timed[: len(due)]
        return due

    def next_time(self) -> float | None:
        return _at(self.timed[0]) if self.timed else None

    def unfired(self) -> list[Fault]:
        """Faults whose trigger was never reached (worth a note: the scenario may not
        test what it says)."""
        return self.timed + [fault for queue in self.bytes.values() for _, fault in queue]


def _at(fault: Fault) -> float:
    assert fault.trigger.at is not None
    return fault.trigger.at


# -- what to send ------------------------------------------------------------------------------


class OwnStream:
    """The endpoint's own byte stream, cut into writes or packets, to a count or a time."""

    def __init__(self, scenario: Scenario, name: str, start: int, packets: bool) -> None:
        work = scenario.endpoint(name).workload
        self.stream_name = name
        self.packets = packets
        self._stream = scenario.byte_stream(name)
        if packets:
            self._sizes = packet_sizes(scenario, name)
        else:
            self._sizes = sizes(scenario.seed, name, "writes", work.write_size)
        self._limit = work.send or None
        self._duration = work.duration
        self._until: float | None = None
        self.start = self.offset = start
        if packets:
            skip_packets(self._sizes, start)
        self._pending: memoryview | None = None
        self.sha = hashlib.sha256()

    def begin(self) -> None:
        """Start the clock of a duration-bound stream."""
        if self._duration:
            self._until = time.monotonic() + self._duration

    def done(self) -> bool:
        if self._limit is not None and self.offset >= self._limit:
            return True
        return self._until is not None and time.monotonic() >= self._until

    def next(self, cap: int | None) -> memoryview | None:
        """The next chunk (or packet) to send; a stream chunk ends at ``cap`` bytes."""
        if self._pending is None:
            n = next(self._sizes)
            if self._limit is not None:
                n = min(n, self._limit - self.offset)
            if cap is not None and not self.packets:
                n = min(n, cap)
            self._pending = self._stream.read(self.offset, n)
        return self._pending

    def advance(self, n: int) -> None:
        assert self._pending is not None
        self.sha.update(self._pending[:n])
        self.offset += n
        self._pending = self._pending[n:] if n < len(self._pending) else None


class EchoQueue:
    """What an echoing endpoint received and has yet to send back, whole packets kept."""

    def __init__(self, origin: str, start: int, packets: bool) -> None:
        self.stream_name = origin
        self.packets = packets
        self.start = self.offset = start
        self._queue: deque[bytes] = deque()
        self.backlog = 0
        self.sha = hashlib.sha256()

    def push(self, data: memoryview) -> None:
        self._queue.append(bytes(data))
        self.backlog += len(data)

    def empty(self) -> bool:
        return not self._queue

    def next(self, cap: int | None) -> memoryview | None:
        if not self._queue:
            return None
        head = memoryview(self._queue[0])
        return head if self.packets or cap is None else head[:cap]

    def advance(self, n: int) -> None:
        head = self._queue.popleft()
        self.sha.update(head[:n])
        if n < len(head):
            self._queue.appendleft(head[n:])
        self.offset += n
        self.backlog -= n

    def begin(self) -> None:
        """Echoes have no clock of their own."""


def packet_sizes(scenario: Scenario, sender: str, *, endless: bool = False) -> Iterator[int]:
    """The sizes of the packets ``sender`` sends: its drawn sizes, the last one cut so
    that a byte count ends on a packet boundary.  Receivers draw the same sequence,
    ``endless`` so that past the last packet they wait for more -- that is, for the close."""
    work = scenario.endpoint(sender).workload
    limit = work.send or None
    offset = 0
    for n in sizes(scenario.seed, sender, "packets", work.write_size):
        if limit is not None and offset < limit:
            n = min(n, limit - offset)
        elif limit is not None and not endless:
            return
        offset += n
        yield n


def skip_packets(seq: Iterator[int], offset: int) -> None:
    """Advance a packet-size sequence past ``offset`` bytes (a client resuming)."""
    done = 0
    while done < offset:
        done += next(seq)
    if done != offset:
        raise ValueError(f"stream offset {offset} falls inside a packet")


# -- what to receive ----------------------------------------------------------------------------


class Inbox:
    """Reads the peer's stream (or the echo of our own), checking every byte."""

    def __init__(self, scenario: Scenario, name: str, start: int, packets: bool) -> None:
        origin = scenario.origin(name)
        assert origin is not None
        work = scenario.endpoint(name).workload
        self.origin = origin
        self.packets = packets
        self.stop = scenario.rx_stop(name)
        self.check = StreamCheck(scenario.byte_stream(origin), start)
        if packets:
            self._sizes = packet_sizes(scenario, origin, endless=True)
            skip_packets(self._sizes, start)
            biggest = scenario.endpoint(origin).workload.write_size.high
        else:
            self._sizes = sizes(scenario.seed, name, "reads", work.read_size)
            biggest = work.read_size.high
        self.buf = bytearray(biggest)
        self.pause = work.read_pause
        self.closed = False
        self._want: int | None = None

    @property
    def offset(self) -> int:
        return self.check.offset

    def done(self, target: int | None) -> bool:
        return self.closed or (target is not None and self.offset >= target)

    def want(self, cap: int | None, target: int | None) -> int:
        """Bytes to ask for next (a whole packet, or a stream read cut at ``cap``/target)."""
        if self._want is None:
            self._want = next(self._sizes)
        n = self._want
        if not self.packets:
            for bound in (cap, None if target is None else target - self.offset):
                if bound is not None:
                    n = min(n, bound)
        return n

    def take(self, data: memoryview) -> None:
        self.check.feed(data)
        self._want = None


# -- the endpoint ---------------------------------------------------------------------------------


class EndpointBase:
    """What every endpoint instance has: its job, its line to the runner, its settings,
    and the bound on its waits (its ``timeout``, else half the deadline)."""

    def __init__(self, job: EndpointJob, link: Link) -> None:
        self.job = job
        self.link = link
        self.scenario = job.scenario
        self.spec = job.scenario.endpoint(job.name)
        self.timeout = self.spec.timeout or self.scenario.deadline / 2


class Endpoint(EndpointBase):
    """One endpoint instance: set-up, workload, faults, close, report."""

    def __init__(self, job: EndpointJob, link: Link) -> None:
        super().__init__(job, link)
        notify = [f for f in self.scenario.faults_of(job.name) if isinstance(f, NotifyFault)]
        self.tap = EventTap(notify, job.scenario.seed, job.name)
        self.triggers = Triggers(job.scenario, job.name, job.instance)
        self.chan: Vchan | None = None
        self.engine: Engine | None = None
        self.connected_at = 0.0
        self.saw_close = False
        self.stopped: str | None = None

    # -- the life of an endpoint --

    def run(self) -> None:
        self.link.emit("started", pid=os.getpid())
        error: dict[str, Any] | None = None
        phase = "setup"
        try:
            await_go(self.link, self.timeout, self.spec.is_server)
            backend = TappedBackend(self.job.backends(self.spec.domain), self.tap)
            self.chan = self._open(backend)
            phase = "io"
            self.engine = Engine(self)
            self.engine.run()
        except Aborted as exc:
            self.stopped = f"not started: {exc}"
        except BaseException as exc:  # every failure is a result to report, not a crash
            error = describe_error(exc, phase)
        error = self._close(error)
        self.link.emit("result", **self._result(error))

    def _open(self, backend: Backend) -> Vchan:
        spec, s = self.spec, self.scenario
        if spec.is_server:
            chan = Vchan.server(
                backend,
                s.client.domain,
                spec.path,
                spec.read_min,
                spec.write_min,
                blocking=spec.blocking,
            )
            chan.server_persist = spec.persist
            if spec.start_index:
                set_indices(chan, spec.start_index)
        else:
            chan = Vchan.client(backend, s.server.domain, s.client_path, blocking=spec.blocking)
        self.chan = chan
        chan.timeout = self.timeout
        if spec.spin is not None:
            chan.spin = spec.spin
        for fault in self.triggers.setup:
            self.fire(fault)
        if spec.is_server:
            ring_ref, port = channel_keys(backend, spec.path)
            self.link.emit("listening", ring_ref=ring_ref, port=port, orders=list(s.orders))
        self.connected_at = time.monotonic()
        return chan

    def _close(self, error: dict[str, Any] | None) -> dict[str, Any] | None:
        if self.chan is not None:
            self.link.emit("closing")
            try:
                self.chan.close()
            except BaseException as exc:
                error = error or describe_error(exc, "close")
        return error

    def _result(self, error: dict[str, Any] | None) -> dict[str, Any]:
        engine = self.engine
        return {
            "sent": engine.sent_report() if engine else None,
            "received": engine.received_report() if engine else None,
            "error": error,
            "stopped": self.stopped,
            "unfired": [fault.describe() for fault in self.triggers.unfired()],
            "events": vars(self.tap.counts),
        }

    # -- faults --

    def fire(self, fault: Fault) -> None:
        """Commit ``fault`` now, telling the runner first (a kill leaves no later chance)."""
        detail: dict[str, Any] = {}
        if isinstance(fault, CorruptFault):
            assert self.chan is not None
            detail = corrupt(self.chan, fault)
        self.link.emit(
            "fault", fault=fault.describe(), kind=fault.kind, **detail, **self._offsets()
        )
        if isinstance(fault, KillFault) or (
            isinstance(fault, RestartFault) and fault.how == "kill"
        ):
            os.kill(os.getpid(), signal.SIGKILL)
        elif isinstance(fault, NotifyFault):
            self.tap.activate(fault)
        elif isinstance(fault, StallFault):
            assert self.engine is not None
            self.engine.stall(fault.duration)
        elif isinstance(fault, CloseFault | RestartFault):
            self.stopped = f"closed by fault: {fault.describe()}"

    def _offsets(self) -> dict[str, int]:
        engine = self.engine
        if engine is None:
            return {}
        found = {}
        if engine.out is not None:
            found["sent"] = engine.out.offset
        if engine.inbox is not None:
            found["received"] = engine.inbox.offset
        return found

    def saw_peer_close(self) -> None:
        """Tell the runner, once, when this endpoint first noticed its peer closed."""
        if not self.saw_close:
            self.saw_close = True
            self.link.emit("peer_closed")


class Engine:
    """The I/O loop: send and receive until both directions are done.

    A blocking endpoint that has one direction to serve makes plain blocking calls --
    they really block, which is the behaviour under test.  One with both directions
    live only calls what cannot block (reads when data is ready, writes that fit) and
    waits on the event channel otherwise, as any single-threaded duplex program must.
    """

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep
        self.chan = ep.chan
        assert self.chan is not None
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
        ep.link.emit("connected", sent=tx_start, received=rx_start)

    def _resume_offset(self, index: int) -> int:
        return (index - self.ep.scenario.server.start_index) & U32

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
            "progress",
            sent=self._sent_offset(),
            received=self._received_offset(),
            mismatch_at=self.inbox.check.mismatch_at if self.inbox else None,
            events=vars(self.ep.tap.counts),
        )

    def sent_report(self) -> dict[str, Any] | None:
        out = self.out
        if out is None:
            return None
        return {
            "stream": out.stream_name,
            "start": out.start,
            "count": out.offset - out.start,
            "sha256": out.sha.hexdigest(),
        }

    def received_report(self) -> dict[str, Any] | None:
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
