"""Replaying a trace: the channel view plus a transport (play, pause, step, seek, speed)
and a timeline with the run's injected faults marked on it."""

from __future__ import annotations

import time
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding

from ..frames import Frame
from ..playback import ReplaySource
from ..widgets.timeline import Timeline
from .channel import ChannelScreen

#: Seconds of trace time the shift+arrow keys jump.
JUMP = 1.0


class ReplayScreen(ChannelScreen):
    """A trace played back on its own clock."""

    BINDINGS: ClassVar = [
        Binding("space", "play_pause", "Play/pause"),
        Binding("left", "step(-1)", "Step back", show=False),
        Binding("right", "step(1)", "Step", show=False),
        Binding("shift+left", f"jump({-JUMP})", f"Back {JUMP:g} s", show=False),
        Binding("shift+right", f"jump({JUMP})", f"Ahead {JUMP:g} s", show=False),
        Binding("left_square_bracket", "fault(-1)", "Prev fault", show=False),
        Binding("right_square_bracket", "fault(1)", "Next fault"),
        Binding("n", "flagged(1)", "Next problem"),
        Binding("N", "flagged(-1)", "Prev problem", show=False),
        Binding("minus", "speed(-1)", "Slower", show=False),
        Binding("plus", "speed(1)", "Faster", show=False),
        Binding("home", "seek_end(0)", "Start", show=False),
        Binding("end", "seek_end(1)", "End", show=False),
    ]

    source: ReplaySource

    def __init__(self, source: ReplaySource, *, autoplay: bool = True) -> None:
        super().__init__(source)
        self.source.playing = autoplay
        self._last_tick = time.monotonic()

    def compose_controls(self) -> ComposeResult:
        timeline = Timeline(id="timeline")
        timeline.border_title = "timeline · ✖ fault  ┼ endpoint · click to seek"
        yield timeline

    def tick(self) -> None:
        now = time.monotonic()
        self.source.advance(now - self._last_tick)
        self._last_tick = now
        self.redraw()

    def redraw(self) -> None:
        super().redraw()
        src = self.source
        self.query_one(Timeline).show(src.start, src.end, src.now, src.marks)

    def status(self, frame: Frame) -> str:
        src = self.source
        state = "▶" if src.playing else "⏸"
        recent = src.recent()
        last = f" · {recent.kind}: {recent.text}" if recent is not None else ""
        return (
            f"{state} x{src.speed:g}  {src.now:.3f}/{src.end:.3f} s  "
            f"#{src.index + 1}/{len(src.frames)}{last}"
        )

    # -- transport --
    def action_play_pause(self) -> None:
        self.source.toggle()
        self.redraw()

    def action_step(self, records: int) -> None:
        self.source.step(records)
        self.redraw()

    def action_jump(self, seconds: float) -> None:
        self.source.seek(self.source.now + seconds)
        self.redraw()

    def action_fault(self, direction: int) -> None:
        if self.source.seek_mark(direction) is None:
            self.notify("no more faults that way", timeout=2)
        self.redraw()

    def action_flagged(self, direction: int) -> None:
        if self.source.seek_flagged(direction) is None:
            self.notify("no more stalls or problems that way", timeout=2)
        self.redraw()

    def action_speed(self, steps: int) -> None:
        self.source.faster(steps)
        self.redraw()

    def action_seek_end(self, which: int) -> None:
        self.source.playing = False
        self.source.seek(self.source.end if which else self.source.start)
        self.redraw()

    def on_timeline_seek(self, message: Timeline.Seek) -> None:
        self.source.playing = False
        self.source.seek(message.t)
        self.redraw()
