"""One channel, redrawn :data:`FPS` times a second from whatever :class:`Source` feeds it.

Live, each redraw samples the control page; the replay screen (a subclass) moves its
play position first.  Closing the screen dismisses it: the channel list comes back for
a live channel, the app ends for a replay.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from ..frames import Frame
from ..source import Source
from ..widgets.details import Details
from ..widgets.text import set_text
from ..widgets.view import ChannelView
from .base import TooSmall

#: Redraws per second (the inspector promises at least 20).
FPS = 25


class ChannelScreen(Screen[None]):
    """The channel view of one source, with a status line over it."""

    BINDINGS: ClassVar = [
        Binding("escape", "close", "Close"),
        Binding("b", "details('bytes')", "Bytes", show=False),
        Binding("i", "details('ends')", "Ends", show=False),
    ]

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source
        self.redraws = 0
        #: The frame on screen (None before the first redraw).
        self.frame: Frame | None = None

    def compose(self) -> ComposeResult:
        yield TooSmall()
        yield Static(
            f"{self.source.kind} · {self.source.title}",
            classes="title",
            markup=False,
        )
        yield Static(id="status", markup=False)
        yield ChannelView()
        yield from self.compose_controls()
        yield Footer()

    def compose_controls(self) -> ComposeResult:
        """Widgets under the channel view (none for a live channel)."""
        yield from ()

    def on_mount(self) -> None:
        self.redraw()
        self.set_interval(1 / FPS, self.tick)

    def on_unmount(self) -> None:
        self.source.close()

    def tick(self) -> None:
        """Called FPS times a second."""
        self.redraw()

    def next_frame(self) -> Frame:
        """The frame to draw now: the source's."""
        return self.source.frame()

    def redraw(self) -> None:
        frame = self.frame = self.next_frame()
        self.query_one(ChannelView).show(frame, self.source.identity())
        notice = self.source.notice()
        status = self.query_one("#status", Static)
        status.set_class(bool(notice), "-notice")
        set_text(status, notice or self.status(frame))
        self.redraws += 1

    def status(self, frame: Frame) -> str:
        """The line over the view when the source has nothing more pressing to say."""
        return f"t {frame.time:8.2f} s since the channel started · {FPS} frames/s · read-only"

    def action_details(self, view: str) -> None:
        """Show ``view`` (bytes, ends) in the space under the problems."""
        self.query_one(Details).choose(view)

    def action_close(self) -> None:
        self.dismiss()
