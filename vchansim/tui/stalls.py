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

A sleep is judged only once it is :data:`GRACE` old: a wake-up in flight takes
microseconds, so anything older is not one on its way.  An end that sleeps "for an
event" without saying why (the C library) is taken to read or write by the request it
made, remembered for as long as that sleep lasts, since honouring a request clears it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .. import layout
from ..layout import PageState
from ..statspage import Blocked, Wait

#: Seconds a sleep must last before it is judged (a wake-up in flight is far quicker).
GRACE = 0.1

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
        doing = {"read": "reading", "write": "writing", None: "for an event"}[self.direction]
        return f"asleep {doing} {self.age:.1f} s"


@dataclass(frozen=True)
class Stall:
    """A named verdict on the channel's waits."""

    name: str
    severity: Severity
    text: str


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
_REQUEST = {"read": layout.NOTIFY_WRITE, "write": layout.NOTIFY_READ}
_REQUEST_NAME = {"read": "WRITE", "write": "READ"}
_SAID: dict[Blocked, Direction] = {Blocked.READ: "read", Blocked.WRITE: "write"}

#: Waits of (server, client); None where the source cannot see them.
Waits = tuple[Wait | None, Wait | None]
EndWaits = tuple[EndWait | None, EndWait | None]


def _size(fill: float) -> str:
    return f"{int(fill)} B"


class StallJudge:
    """Turns each frame's waits into :class:`EndWait`\\ s and verdicts; fed in time order."""

    def __init__(self) -> None:
        #: (end, since) -> the direction learned for that sleep.
        self._learned: dict[tuple[str, float], Direction] = {}

    def judge(
        self, time: float, page: PageState, rings: dict[str, Ring], waits: Waits | None
    ) -> tuple[EndWaits | None, tuple[Stall, ...]]:
        """The ends' sleeps at ``time`` (``waits`` on the same clock) and the verdicts."""
        if waits is None:
            return None, ()
        ends = (
            self._end_wait(_ENDS[0], time, page, waits[0]),
            self._end_wait(_ENDS[1], time, page, waits[1]),
        )
        ripe = [w if w is not None and w.age >= GRACE else None for w in ends]
        stalls = [
            stall
            for end, wait, peer in ((_ENDS[0], ripe[0], ripe[1]), (_ENDS[1], ripe[1], ripe[0]))
            if wait is not None
            for stall in _verdicts(end, wait, peer, page, rings)
        ]
        if not any(s.severity == "hang" for s in stalls):
            stalls = _deadlock(ripe[0], ripe[1]) or stalls
        return ends, tuple(stalls)

    def _end_wait(
        self, end: _End, time: float, page: PageState, wait: Wait | None
    ) -> EndWait | None:
        """``end``'s sleep, or None if it is awake -- or gone: a process killed in its
        sleep leaves its word set, so a word counts only while the end is connected."""
        if wait is None or getattr(page, end.live) != layout.LIVE_CONNECTED:
            self._forget(end.name, None)
            return None
        direction = _SAID.get(wait.blocked) or self._guess(end, wait.since, getattr(page, end.asks))
        self._forget(end.name, wait.since)
        return EndWait(end.name, wait.blocked, direction, wait.since, max(time - wait.since, 0.0))

    def _guess(self, end: _End, since: float, asked: int) -> Direction | None:
        """An unexplained sleep's direction, from the one request it made, remembered."""
        key = (end.name, since)
        wants = [d for d, bit in _REQUEST.items() if asked & bit]
        if len(wants) == 1:
            self._learned[key] = wants[0]
        return self._learned.get(key)

    def _forget(self, end: str, keep: float | None) -> None:
        for key in [k for k in self._learned if k[0] == end and k[1] != keep]:
            del self._learned[key]


def _verdicts(
    end: _End, wait: EndWait, peer: EndWait | None, page: PageState, rings: dict[str, Ring]
) -> list[Stall]:
    """What is wrong with ``end``'s ripe sleep on its own."""
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
                f"{who} sleeps {age} {wait.direction}ing with {there}: the {end.peer} took its "
                f"{bit} request but no event woke it",
            )
        ]
    if not asked:
        state = "an empty" if wait.direction == "read" else "a full"
        return [
            Stall(
                "unasked-wait",
                "hang",
                f"{who} sleeps {age} {wait.direction}ing {state} ring without asking the "
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


def _deadlock(server: EndWait | None, client: EndWait | None) -> list[Stall]:
    """Both ends asleep on requests, each waiting for what only the other can do."""
    if server is None or client is None or None in (server.direction, client.direction):
        return []
    return [
        Stall(
            "deadlock",
            "hang",
            f"both ends sleep, each waiting for the other: the server {server.direction}ing "
            f"for {server.age:.1f} s, the client {client.direction}ing for {client.age:.1f} s",
        )
    ]
