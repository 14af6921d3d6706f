"""A live channel: the channel view of a :class:`~..live.LiveSource`, with the keys a
debugger needs while the channel runs -- pause the picture to read it."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding

from ..frames import Frame
from ..live import LiveSource
from .channel import ChannelScreen


class LiveScreen(ChannelScreen):
    """One live channel; ``space`` freezes the picture (the channel itself runs on)."""

    BINDINGS: ClassVar = [Binding("space", "pause", "Pause")]

    source: LiveSource

    def __init__(self, source: LiveSource) -> None:
        super().__init__(source)
        self.held: Frame | None = None

    def next_frame(self) -> Frame:
        return self.held if self.held is not None else self.source.frame()

    def status(self, frame: Frame) -> str:
        if self.held is not None:
            return f"⏸ paused at t {frame.time:.2f} s · space resumes · read-only"
        return super().status(frame)

    def action_pause(self) -> None:
        """Hold the last frame on screen, or go live again."""
        self.held = None if self.held is not None else self.source.frame()
        self.redraw()
