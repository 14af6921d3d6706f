"""What an endpoint sends and receives: its own stream, an echo, and a checked inbox.

Every byte is a pure function of the seed (``streams.py``), cut into writes, reads or
packets of seeded sizes; a restarted endpoint resumes each stream at an offset.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Iterator

from .spec import Scenario
from .streams import StreamCheck, sizes


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
