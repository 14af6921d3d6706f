"""Replaying a trace: the same frames a live channel gives, on the trace's own clock.

The whole trace is turned into frames once, when it is opened, by the same
:class:`~.frames.FrameBuilder` the live source uses; playing, stepping and seeking then
only move a cursor over them, so seeking backwards costs nothing and a paused frame is
always exactly the one the run recorded.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..trace import RingSample, Trace, TraceError, read_trace
from .frames import EventCounts, Frame, FrameBuilder
from .identity import Identity, replay_identity

#: Playback speeds offered, slowest first.
SPEEDS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0, 25.0)


@dataclass(frozen=True)
class Mark:
    """Something that happened in the run, placed on the timeline."""

    t: float
    #: "fault" (an injected fault) or "endpoint" (an endpoint's life: connected, killed...).
    kind: str
    text: str


def _events(sample: RingSample) -> EventCounts | None:
    if sample.events_srv_to_cli is None or sample.events_cli_to_srv is None:
        return None
    return EventCounts(sample.events_srv_to_cli, sample.events_cli_to_srv)


#: Record fields that say nothing a reader of one status line needs.
_DETAIL_SKIP = frozenset({"type", "t", "endpoint", "kind", "event", "instance", "pid"})


def _describe(record: dict[str, Any]) -> str:
    """One line for a fault or endpoint record: who, and what -- the runner's own words
    for a fault when it wrote them, else the record's kind and fields."""
    if isinstance(record.get("fault"), str):
        return f"{record.get('endpoint', '?')}: {record['fault']}"
    what = record.get("kind") if record["type"] == "fault" else record.get("event")
    details = " ".join(f"{k}={v}" for k, v in record.items() if k not in _DETAIL_SKIP)
    return " ".join(str(part) for part in (record.get("endpoint"), what, details) if part)


def _marks(trace: Trace) -> list[Mark]:
    """Faults and endpoint events, minus the periodic progress reports (noise here)."""
    return [
        Mark(record["t"], record["type"], _describe(record))
        for record in trace.timeline()
        if record["type"] == "fault"
        or (record["type"] == "endpoint" and record.get("event") != "progress")
    ]


def _flags(frame: Frame) -> set[str]:
    return {*frame.problems, *(stall.name for stall in frame.stalls)}


def _flag_starts(frames: list[Frame]) -> list[int]:
    """The indices of the frames where a verdict or problem appears that the frame before
    did not have."""
    before: set[str] = set()
    starts = []
    for index, frame in enumerate(frames):
        now = _flags(frame)
        if now - before:
            starts.append(index)
        before = now
    return starts


def _title(trace: Trace, name: str) -> str:
    """The scenario's name and channel, as far as the header says them, and the file."""
    header = trace.header
    found = header.get("channel")
    channel: dict[str, Any] = found if isinstance(found, dict) else {}
    parts = [str(header.get("scenario") or "")]
    if {"server_domain", "client_domain"} <= channel.keys():
        parts.append(f"dom{channel['server_domain']} → dom{channel['client_domain']}")
    parts.append(str(channel.get("path") or ""))
    parts.append(f"({name})")
    return "  ".join(part for part in parts if part)


class ReplaySource:
    """A trace as a source of frames, with a play position, a speed, and the run's marks."""

    kind = "replay"

    def __init__(self, trace: Trace, name: str) -> None:
        samples = sorted(trace.samples(), key=lambda s: s.t)
        if not samples:
            raise TraceError(f"{name}: the trace has no ring records: nothing to replay")
        builder = FrameBuilder()
        self.frames = [builder.feed(s.t, s, _events(s), s.waits) for s in samples]
        self.times = [frame.time for frame in self.frames]
        self.marks = _marks(trace)
        self.flagged = _flag_starts(self.frames)
        self.title = _title(trace, name)
        self._identity = replay_identity(trace.header, trace.records)
        self.complete = trace.complete
        span = [self.times[0], self.times[-1], *(mark.t for mark in self.marks)]
        self.start, self.end = min(span), max(span)
        self.now = self.times[0]
        self.index = 0
        self.playing = False
        self.speed = 1.0

    @classmethod
    def open(cls, path: str | Path) -> ReplaySource:
        """Read and check the trace at ``path`` (TraceError names what is wrong with it)."""
        return cls(read_trace(path), Path(path).name)

    # -- the Source protocol --
    def frame(self) -> Frame:
        return self.frames[self.index]

    def identity(self) -> Identity:
        return self._identity

    def notice(self) -> str:
        if self.complete:
            return ""
        return "the trace has no end record: the run was cut short (replaying what is there)"

    def close(self) -> None:
        """Nothing to release: the trace was read whole."""

    # -- transport --
    def _goto(self, t: float) -> None:
        self.now = min(max(t, self.start), self.end)
        self.index = max(bisect.bisect_right(self.times, self.now) - 1, 0)

    def advance(self, seconds: float) -> None:
        """Move on by ``seconds`` of wall time at the current speed, if playing."""
        if not self.playing:
            return
        self._goto(self.now + seconds * self.speed)
        if self.now >= self.end:
            self.playing = False

    def toggle(self) -> None:
        """Play or pause; playing from the end starts again from the beginning."""
        if not self.playing and self.now >= self.end:
            self._goto(self.start)
        self.playing = not self.playing

    def step(self, records: int) -> None:
        """Pause and move by ``records`` ring records (negative: back)."""
        self.playing = False
        self.index = min(max(self.index + records, 0), len(self.frames) - 1)
        self.now = self.times[self.index]

    def seek(self, t: float) -> None:
        """Jump to trace time ``t`` (clamped to the trace)."""
        self._goto(t)

    def seek_mark(self, direction: int) -> Mark | None:
        """Jump to the next (1) or previous (-1) fault; returns it, or None if there is none."""
        faults = [m for m in self.marks if m.kind == "fault"]
        ahead = (
            [m for m in faults if m.t > self.now]
            if direction > 0
            else [m for m in reversed(faults) if m.t < self.now]
        )
        if not ahead:
            return None
        self.playing = False
        self._goto(ahead[0].t)
        return ahead[0]

    def seek_flagged(self, direction: int) -> Frame | None:
        """Jump to the next (1) or previous (-1) record where a stall verdict or a page
        problem begins; returns its frame, or None if there is none that way."""
        ahead = (
            [i for i in self.flagged if i > self.index]
            if direction > 0
            else [i for i in reversed(self.flagged) if i < self.index]
        )
        if not ahead:
            return None
        self.playing = False
        self.index = ahead[0]
        self.now = self.times[self.index]
        return self.frames[self.index]

    def faster(self, steps: int) -> None:
        """Change speed by ``steps`` positions in :data:`SPEEDS`."""
        here = min(range(len(SPEEDS)), key=lambda i: abs(SPEEDS[i] - self.speed))
        self.speed = SPEEDS[min(max(here + steps, 0), len(SPEEDS) - 1)]

    def recent(self) -> Mark | None:
        """The last mark at or before the play position."""
        passed = [m for m in self.marks if m.t <= self.now]
        return passed[-1] if passed else None
