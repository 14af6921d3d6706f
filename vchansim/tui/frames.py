"""What the inspector draws: one :class:`Frame` per refresh, derived from page snapshots.

A control page only says where the indices are *now*.  Throughput, wrap counts and the
sparkline history need the sequence of snapshots, so a :class:`FrameBuilder` is fed every
sample in order and turns each into a frame.  Live and replayed channels go through the
same builder, which is why the widgets never need to know where a frame came from, and
why a replayed trace looks exactly as the live channel did.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .. import layout
from ..layout import PageState
from .stalls import EndWaits, Ring, Seen, Stall, StallJudge, Waits

#: An index that moved by this much or more went *backwards* (a reset or corruption).
BACKWARDS = 1 << 31
#: Seconds of traffic each sparkline bar sums up.
BUCKET = 0.25
#: Seconds over which the throughput figure is averaged.
WINDOW = 1.0
#: Sparkline bars kept (12 s of history).
HISTORY = 48

#: (name, which way the bytes go) of the two rings; PageState fields are named after them.
RINGS = (("left", "client → server"), ("right", "server → client"))

#: What the live bytes mean (docs/protocol.md §2): the client's may also say "not yet".
CLIENT_STATES = {
    layout.LIVE_CLOSED: "exited",
    layout.LIVE_CONNECTED: "connected",
    layout.LIVE_WAITING: "not yet connected",
}
SERVER_STATES = {layout.LIVE_CLOSED: "exited", layout.LIVE_CONNECTED: "connected"}


def live_word(value: int, states: dict[int, str]) -> str:
    """What a live byte means, or that it means nothing."""
    return states.get(value, f"invalid ({value})")


#: (left, right) bytes in flight, read from ``cons`` on; None where they cannot be read.
InFlightBytes = tuple[bytes | None, bytes | None]


@dataclass(frozen=True)
class EventCounts:
    """Events sent in each direction since the channel started."""

    srv_to_cli: int
    cli_to_srv: int


@dataclass(frozen=True)
class RingFrame:
    """One ring at one instant, with what the history up to then says about it."""

    name: str
    direction: str
    order: int
    cons: int
    prod: int
    #: Times the producer has gone round the buffer (None while the order is invalid).
    wraps: int | None
    #: Bytes per second produced over the last :data:`WINDOW` seconds.
    rate: float
    #: Bytes per second of the last :data:`HISTORY` buckets, oldest first.
    history: tuple[float, ...]

    @property
    def size(self) -> int | None:
        """Bytes in the ring, or None when the page holds an impossible order."""
        if layout.MIN_ORDER <= self.order <= layout.MAX_ORDER:
            return layout.ring_size(self.order)
        return None

    @property
    def fill(self) -> int:
        """Bytes in flight as the indices say, unsanitised."""
        return (self.prod - self.cons) & layout.U32

    @property
    def corrupt(self) -> bool:
        """Whether these indices cannot come from a correct pair of endpoints."""
        return self.size is None or self.fill > self.size

    def position(self, index: int) -> int | None:
        """Where a free-running index points inside the buffer."""
        return None if self.size is None else index & (self.size - 1)


@dataclass(frozen=True)
class Frame:
    """Everything the channel view shows at one instant."""

    #: Seconds on the source's clock (a trace's own time, or since attaching).
    time: float
    page: PageState
    left: RingFrame
    right: RingFrame
    #: None where the source cannot count events.
    events: EventCounts | None
    problems: tuple[str, ...]
    #: What (server, client) sleep in; None where the source cannot see it.
    waits: EndWaits | None = None
    #: The verdicts on those sleeps (vchansim/tui/stalls.py).
    stalls: tuple[Stall, ...] = ()
    #: The first bytes in flight of each ring (vchansim/tui/inflight.py).
    in_flight: InFlightBytes = (None, None)
    #: Verdicts given earlier whose state has ended, newest first.
    ended: tuple[Seen, ...] = ()

    @property
    def rings(self) -> tuple[RingFrame, RingFrame]:
        return (self.left, self.right)


class RateMeter:
    """Throughput on the samples' own clock, so a trace replays the same numbers and the
    same sparkline however fast it is played.

    The rate is the bytes of the last :data:`WINDOW` seconds (robust to samples that
    come 25 times a second live, or only when something changed in a trace); the
    history sums fixed :data:`BUCKET`-second bars, the last one still filling.
    """

    def __init__(self) -> None:
        self._start: float | None = None
        self._bucket = 0
        self._bytes = 0
        self._closed: deque[float] = deque([0.0] * (HISTORY - 1), maxlen=HISTORY - 1)
        self._window: deque[tuple[float, int]] = deque()

    def add(self, time: float, nbytes: int) -> None:
        """Count ``nbytes`` produced by ``time``, closing the buckets that time has passed."""
        if self._start is None:
            self._start = time
        bucket = int((time - self._start) / BUCKET)
        if bucket > self._bucket:
            self._closed.append(self._bytes / BUCKET)
            self._closed.extend([0.0] * min(bucket - self._bucket - 1, HISTORY))
            self._bucket, self._bytes = bucket, 0
        self._bytes += nbytes
        self._window.append((time, nbytes))
        while self._window[0][0] <= time - WINDOW:
            self._window.popleft()

    @property
    def rate(self) -> float:
        """Bytes per second over the last :data:`WINDOW` seconds."""
        return sum(nbytes for _, nbytes in self._window) / WINDOW

    @property
    def history(self) -> tuple[float, ...]:
        """Bytes per second of the last :data:`HISTORY` bars, oldest first."""
        return (*self._closed, self._bytes / BUCKET)


class RingTracker:
    """Follows one ring's producer index from sample to sample."""

    def __init__(self, name: str, direction: str) -> None:
        self.name = name
        self.direction = direction
        self._cons, self._prod, self._order = f"{name}_cons", f"{name}_prod", f"{name}_order"
        self._first: int | None = None
        self._last = 0
        self._produced = 0
        self.meter = RateMeter()

    def feed(self, time: float, page: PageState) -> RingFrame:
        prod = getattr(page, self._prod)
        order = getattr(page, self._order)
        moved = 0
        if self._first is None:
            self._first = prod
        else:
            moved = (prod - self._last) & layout.U32
            if moved >= BACKWARDS:  # not traffic: count afresh from here
                self._first, self._produced, moved = prod, 0, 0
        self._last = prod
        self._produced += moved
        self.meter.add(time, moved)
        valid = layout.MIN_ORDER <= order <= layout.MAX_ORDER
        return RingFrame(
            name=self.name,
            direction=self.direction,
            order=order,
            cons=getattr(page, self._cons),
            prod=prod,
            wraps=(self._first + self._produced) >> order if valid else None,
            rate=self.meter.rate,
            history=self.meter.history,
        )


class FrameBuilder:
    """Turns a time-ordered sequence of page snapshots into frames."""

    def __init__(self) -> None:
        self._rings = [RingTracker(name, way) for name, way in RINGS]
        self._judge = StallJudge()

    def feed(
        self,
        time: float,
        page: PageState,
        events: EventCounts | None = None,
        waits: Waits | None = None,
        in_flight: InFlightBytes = (None, None),
    ) -> Frame:
        """The frame for a snapshot taken at ``time`` (seconds, any origin, never earlier
        than the previous one); ``waits`` (the ends' sleeps) on the same clock."""
        left, right = (ring.feed(time, page) for ring in self._rings)
        rings = {r.name: Ring(r.fill, r.size) for r in (left, right)}
        ends, stalls = self._judge.judge(time, page, rings, waits)
        problems = tuple(page.problems())
        return Frame(
            time, page, left, right, events, problems, ends, stalls, in_flight, self._judge.ended
        )
