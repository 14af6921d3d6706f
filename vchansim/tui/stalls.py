"""Who waits for whom: each end's sleep, and the protocol's verdict on the pair.

A vchan only moves when each end's sleep is matched by a wake-up the other end owes it:
a reader asleep on an empty ring asked for a WRITE event (bit 0x1 in the peer's notify
byte), and the writer that takes the bit must send it; a writer asleep on a full ring
asked for READ, which the reader owes it.  Each end says in its wait word what it sleeps
in (vchansim/statspage.py); the page says what it asked for and what is in the rings.
Together they name the states that cannot end well:

- ``lost-wakeup`` (hang): the request was taken -- the peer did its part of the work --
  but the end still sleeps: the event was never sent, or was lost;
- ``unasked-wait`` (hang): the end sleeps without a request the peer could honour;
- ``missed-close`` (hang): the peer's live byte says it is gone, yet the end sleeps on;
- ``deadlock`` (hang): both ends asleep, each waiting for the other;
- ``consumer-stalled`` (stall): a writer waits for room that a reader, awake and busy
  elsewhere, is not making -- not a protocol error, but where the time goes.

A verdict is given only once its state has lasted :data:`GRACE`: a wake-up in flight
(the peer took the request and its event is on the way) takes microseconds, so a state
that outlasts it is not one on its way.  What lasts is the state, not the sleep: an end
asleep for a second whose request was taken a moment ago is still about to wake.  An
end that sleeps "for an event" without saying why (the C library) is taken to read or
write by the request it made, remembered for as long as that sleep lasts, since
honouring a request clears it.

A verdict whose state then ends is kept (:class:`Seen`: when it arose, when it was given
and when it ended) for as long as the view is open: a hang that lasts half a second --
an end that re-checks its peer's liveness twice a second ends a missed close that way --
must not be missed by a viewer who looks a moment later.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from .. import layout
from ..layout import PageState
from ..statspage import Blocked, Wait

#: Seconds a stalled state must last before it is flagged (a wake-up in flight is far
#: quicker).
GRACE = 0.1

#: Verdicts that ended kept, the latest of each name (newest first).
ENDED_KEPT = 3

#: Two starts of one end's sleep closer than this are the same sleep: a trace stores a
#: sleep's age rounded to the microsecond, so its start read back can move by one.
SAME_SLEEP = 1e-4

Direction = Literal["read", "write"]
Severity = Literal["hang", "stall"]


@dataclass(frozen=True)
class Ring:
    """What the verdicts need of one ring: bytes in it and its size (None: invalid)."""

    fill: int
    size: int | None

    @property
    def empty(self) -> bool:
        return self.fill == 0

    @property
    def full(self) -> bool:
        return self.size is not None and self.fill >= self.size


@dataclass(frozen=True)
class EndWait:
    """One end asleep, as a frame shows it."""

    end: str
    blocked: Blocked
    #: Which way it waits, as it said or as its request shows; None if it cannot be told.
    direction: Direction | None
    #: When the sleep began, on the frames' clock; and how long it has lasted.
    since: float
    age: float

    def describe(self) -> str:
        return f"asleep {_DOING[self.direction]} {self.age:.1f} s"


@dataclass(frozen=True)
class Stall:
    """A named verdict on the channel's waits."""

    name: str
    severity: Severity
    text: str


@dataclass(frozen=True)
class Seen:
    """A verdict that was given and whose state has ended, on the frames' clock."""

    name: str
    severity: Severity
    #: When its state was first seen, and when the verdict was first given.
    arose: float
    flagged: float
    #: The age of the (youngest) sleep it was about when first given.
    age: float
    #: The first time its state was seen gone (None while it still holds).
    ended: float | None = None

    def describe(self) -> str:
        """``✖ missed-close from t 3.10 to 3.52 s, now over``: one short line."""
        mark = "✖" if self.severity == "hang" else "◐"
        until = self.flagged if self.ended is None else self.ended
        return f"{mark} {self.name} from t {self.arose:.2f} to {until:.2f} s, now over"


@dataclass(frozen=True)
class _End:
    """Where one end's bytes are in the page."""

    name: str
    peer: str
    live: str
    peer_live: str
    #: The notify byte that holds this end's requests (the peer clears them).
    asks: str
    reads: str
    writes: str


_ENDS = (
    _End("server", "client", "srv_live", "cli_live", "cli_notify", "left", "right"),
    _End("client", "server", "cli_live", "srv_live", "srv_notify", "right", "left"),
)
_REQUEST: dict[Direction, int] = {"read": layout.NOTIFY_WRITE, "write": layout.NOTIFY_READ}
_REQUEST_NAME = {"read": "WRITE", "write": "READ"}
_SAID: dict[Blocked, Direction] = {Blocked.READ: "read", Blocked.WRITE: "write"}
_DOING: dict[Direction | None, str] = {"read": "reading", "write": "writing", None: "for an event"}

#: Waits of (server, client); None where the source cannot see them.
Waits = tuple[Wait | None, Wait | None]
EndWaits = tuple[EndWait | None, EndWait | None]
#: What identifies one verdict over time: who, which verdict, and the sleep(s) it is about.
_Key = tuple[str | float, ...]


def _size(fill: float) -> str:
    return f"{int(fill)} B"


class StallJudge:
    """Turns each frame's waits into :class:`EndWait`\\ s and verdicts; fed in time order."""

    def __init__(self) -> None:
        #: end -> the start of its sleep as first seen, and the direction learned for it.
        self._sleeps: dict[str, tuple[float, Direction | None]] = {}
        #: verdict -> when its state was first seen (a verdict is keyed by who, what, and
        #: the sleep(s) it is about).
        self._first: dict[_Key, float] = {}
        #: The verdicts given at the last call, and those that ended since (newest first).
        self._given: dict[_Key, Seen] = {}
        self.ended: tuple[Seen, ...] = ()

    def judge(
        self, time: float, page: PageState, rings: dict[str, Ring], waits: Waits | None
    ) -> tuple[EndWaits | None, tuple[Stall, ...]]:
        """The ends' sleeps at ``time`` (``waits`` on the same clock) and the verdicts;
        :attr:`ended` then holds the verdicts that no longer hold."""
        if waits is None:
            self._latch(time, [])
            return None, ()
        ends = (
            self._end_wait(_ENDS[0], time, page, waits[0]),
            self._end_wait(_ENDS[1], time, page, waits[1]),
        )
        found: list[tuple[_Key, Stall]] = [
            ((end.name, stall.name, wait.since), stall)
            for end, wait, peer in ((_ENDS[0], ends[0], ends[1]), (_ENDS[1], ends[1], ends[0]))
            if wait is not None
            for stall in _verdicts(end, wait, peer, page, rings)
        ]
        if not any(stall.severity == "hang" for _, stall in found):
            found = _deadlock(ends[0], ends[1]) or found
        return ends, self._lasting(time, found)

    def _lasting(self, time: float, found: list[tuple[_Key, Stall]]) -> tuple[Stall, ...]:
        """The verdicts whose state has held for GRACE; a state that went away and came
        back starts over."""
        self._first = {key: self._first.get(key, time) for key, _ in found}
        given = [(key, stall) for key, stall in found if time - self._first[key] >= GRACE]
        self._latch(time, given)
        return tuple(stall for _, stall in given)

    def _latch(self, time: float, given: list[tuple[_Key, Stall]]) -> None:
        """Remember what is given now; what was given before and is not any more ended
        at ``time``."""
        now: dict[_Key, Seen] = {}
        for key, stall in given:
            sleeps = [since for since in key[2:] if isinstance(since, float)]
            age = time - max(sleeps) if sleeps else 0.0
            first = Seen(stall.name, stall.severity, self._first[key], time, age)
            now[key] = self._given.get(key, first)
        over = [replace(seen, ended=time) for key, seen in self._given.items() if key not in now]
        if over:
            names = {seen.name for seen in over}
            kept = [seen for seen in self.ended if seen.name not in names]
            self.ended = (*over, *kept)[:ENDED_KEPT]
        self._given = now

    def _end_wait(
        self, end: _End, time: float, page: PageState, wait: Wait | None
    ) -> EndWait | None:
        """``end``'s sleep, or None if it is awake -- or gone: a process killed in its
        sleep leaves its word set, so a word counts only while the end is connected."""
        if wait is None or getattr(page, end.live) != layout.LIVE_CONNECTED:
            self._sleeps.pop(end.name, None)
            return None
        since, learned = self._sleeps.get(end.name, (wait.since, None))
        if abs(since - wait.since) >= SAME_SLEEP:
            since, learned = wait.since, None
        direction = _SAID.get(wait.blocked) or _one_request(getattr(page, end.asks)) or learned
        self._sleeps[end.name] = (since, direction)
        return EndWait(end.name, wait.blocked, direction, since, max(time - since, 0.0))


def _one_request(asked: int) -> Direction | None:
    """The direction an unexplained sleep waits in, if its end made exactly one request."""
    wants = [d for d, bit in _REQUEST.items() if asked & bit]
    return wants[0] if len(wants) == 1 else None


def _verdicts(
    end: _End, wait: EndWait, peer: EndWait | None, page: PageState, rings: dict[str, Ring]
) -> list[Stall]:
    """What is wrong with ``end``'s sleep on its own."""
    who, age = f"the {end.name}", f"{wait.age:.1f} s"
    if getattr(page, end.peer_live) == layout.LIVE_CLOSED:
        return [
            Stall(
                "missed-close",
                "hang",
                f"{who} still sleeps {age} after the {end.peer} closed (its live byte is 0): "
                "no event will come unless a new client connects",
            )
        ]
    if wait.direction is None:
        return []
    asked = bool(getattr(page, end.asks) & _REQUEST[wait.direction])
    bit = _REQUEST_NAME[wait.direction]
    ring = rings[end.reads if wait.direction == "read" else end.writes]
    ready = not ring.empty if wait.direction == "read" else not ring.full
    if not asked and ready:
        there = (
            f"{_size(ring.fill)} to read"
            if wait.direction == "read"
            else f"{_size((ring.size or 0) - ring.fill)} free"
        )
        return [
            Stall(
                "lost-wakeup",
                "hang",
                f"{who} sleeps {age} {_DOING[wait.direction]} with {there}: the {end.peer} "
                f"took its {bit} request but no event woke it",
            )
        ]
    if not asked:
        state = "an empty" if wait.direction == "read" else "a full"
        return [
            Stall(
                "unasked-wait",
                "hang",
                f"{who} sleeps {age} {_DOING[wait.direction]} {state} ring without asking the "
                f"{end.peer} for a {bit} event: nothing will wake it",
            )
        ]
    if wait.direction == "write" and (peer is None or peer.direction != "read"):
        return [
            Stall(
                "consumer-stalled",
                "stall",
                f"{who} waits {age} for room in a ring of {_size(ring.fill)}: the {end.peer} "
                "is not reading",
            )
        ]
    return []


def _deadlock(server: EndWait | None, client: EndWait | None) -> list[tuple[_Key, Stall]]:
    """Both ends asleep on requests, each waiting for what only the other can do."""
    if server is None or client is None or None in (server.direction, client.direction):
        return []
    key: _Key = ("both", "deadlock", server.since, client.since)
    return [
        (
            key,
            Stall(
                "deadlock",
                "hang",
                f"both ends sleep, each waiting for the other: the server "
                f"{_DOING[server.direction]} for {server.age:.1f} s, the client "
                f"{_DOING[client.direction]} for {client.age:.1f} s",
            ),
        )
    ]
