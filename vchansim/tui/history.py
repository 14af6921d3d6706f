"""The last minutes of a live channel: fill of each ring, events per second, and changes
of the notify bytes, kept in a bounded ring buffer for the history panel.

The live view samples the page 25 times a second; the history folds those samples into
slots of :data:`SLOT` seconds (the highest fill seen in each, the events sent during it,
which notify bytes changed) and keeps the last :data:`WINDOW` seconds of slots, so its
memory and the cost of drawing it are bounded however long the view stays open.  Notify
bytes change far more often than any sampler looks: a change counts when two samples
see different bytes, so a slot says "changed at least once", not how often.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from .frames import Frame

#: Slots per second of channel time, and the seconds one covers.
PER_SECOND = 10
SLOT = 1 / PER_SECOND
#: Seconds of history kept (5 minutes).
WINDOW = 300.0
_SLOTS = round(WINDOW / SLOT)


@dataclass
class Slot:
    """What :data:`SLOT` seconds of the channel did."""

    number: int
    #: Highest fill seen, as a fraction of the ring's size (1.0 for an impossible one).
    left: float = 0.0
    right: float = 0.0
    #: Events sent in both directions during the slot (None: the source cannot count).
    events: int | None = None
    #: Whether the server's requests (``cli_notify``) / the client's (``srv_notify``)
    #: changed during the slot.
    server_asked: bool = False
    client_asked: bool = False


@dataclass(frozen=True)
class Column:
    """One column of the panel: one or more consecutive slots, merged."""

    left: float
    right: float
    #: Events per second over the column, None where unknown.
    rate: float | None
    server_asked: bool
    client_asked: bool


def _fraction(fill: int, size: int | None) -> float:
    return 1.0 if size is None or fill > size else fill / size


def _events(frame: Frame) -> int | None:
    return None if frame.events is None else frame.events.srv_to_cli + frame.events.cli_to_srv


class History:
    """Samples of one channel, fed in time order, folded into the last WINDOW seconds."""

    def __init__(self) -> None:
        self.slots: deque[Slot] = deque(maxlen=_SLOTS)
        self.last: Frame | None = None
        #: Samples folded in so far (all of them, including those gone out of the window).
        self.samples = 0

    def add(self, frame: Frame) -> None:
        number = math.floor(frame.time * PER_SECOND + 1e-9)  # 0.3 s is in slot 3
        if not self.slots or self.slots[-1].number < number:
            self.slots.append(Slot(number))
        slot = self.slots[-1]
        slot.left = max(slot.left, _fraction(frame.left.fill, frame.left.size))
        slot.right = max(slot.right, _fraction(frame.right.fill, frame.right.size))
        events, last = _events(frame), self.last
        if events is not None:
            before = _events(last) if last is not None else None
            sent = 0 if before is None else max(events - before, 0)
            slot.events = (slot.events or 0) + sent
        if last is not None:
            slot.server_asked |= frame.page.cli_notify != last.page.cli_notify
            slot.client_asked |= frame.page.srv_notify != last.page.srv_notify
        self.last = frame
        self.samples += 1

    def per_column(self, width: int) -> int:
        """Slots per column so that the history held fits in ``width`` columns."""
        if not self.slots or width <= 0:
            return 1
        held = self.slots[-1].number - self.slots[0].number + 1
        return max(1, -(-held // width))

    def columns(self, width: int) -> list[Column | None]:
        """``width`` columns, the last ending with the newest slot; None for a column
        before the first sample."""
        if not self.slots or width <= 0:
            return [None] * max(width, 0)
        per = self.per_column(width)
        newest = self.slots[-1].number
        merged: list[list[Slot]] = [[] for _ in range(width)]
        for slot in self.slots:
            column = width - 1 - (newest - slot.number) // per
            if column >= 0:
                merged[column].append(slot)
        shown: list[Column | None] = []
        previous: Column | None = None
        for slots in merged:
            if slots:
                counts = [s.events for s in slots if s.events is not None]
                previous = Column(
                    left=max(s.left for s in slots),
                    right=max(s.right for s in slots),
                    rate=sum(counts) / (per * SLOT) if counts else None,
                    server_asked=any(s.server_asked for s in slots),
                    client_asked=any(s.client_asked for s in slots),
                )
                shown.append(previous)
            elif previous is not None:  # no sample in it: the fill held, nothing sent
                shown.append(Column(previous.left, previous.right, 0.0, False, False))
            else:
                shown.append(None)
        return shown

    def span(self, width: int) -> tuple[float, float]:
        """The channel times of the left edge of the first column and the right edge of
        the last one."""
        end = ((self.slots[-1].number + 1) * SLOT) if self.slots else 0.0
        return end - width * self.per_column(width) * SLOT, end
