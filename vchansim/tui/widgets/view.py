"""The channel view: both rings, the live and notify bytes, and what is wrong with the page.

Both the live screen and the replay screen show a channel through this one widget,
feeding it :class:`~..frames.Frame`\\ s; it has no idea where they came from.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from ..frames import Frame
from .bits import PageBits
from .ring import RingPanel
from .text import set_text


class Problems(Static):
    """Corrupt states in words; ``-bad`` (red) while there are any."""

    def show(self, problems: tuple[str, ...]) -> None:
        self.set_class(bool(problems), "-bad")
        text = "\n".join(f"✖ {p}" for p in problems) if problems else "page is consistent"
        set_text(self, text)


class ChannelView(Vertical):
    """Everything a frame says about the channel."""

    def compose(self) -> ComposeResult:
        with Horizontal(id="rings"):
            yield RingPanel("left", "left ring · client → server")
            yield RingPanel("right", "right ring · server → client")
        bits = PageBits(id="bits")
        bits.border_title = "live and notify bytes"
        yield bits
        problems = Problems(id="problems")
        problems.border_title = "problems"
        yield problems

    def show(self, frame: Frame) -> None:
        """Draw ``frame``."""
        for panel, ring in zip(self.query(RingPanel), frame.rings, strict=True):
            panel.show(ring)
        self.query_one(PageBits).show(frame)
        self.query_one(Problems).show(frame.problems)
