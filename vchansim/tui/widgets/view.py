"""The channel view: both rings, the live and notify bytes, and what is wrong with the page.

Both the live screen and the replay screen show a channel through this one widget,
feeding it :class:`~..frames.Frame`\\ s; it has no idea where they came from.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from ..frames import Frame
from ..identity import Identity
from .bits import PageBits
from .details import Details
from .ring import RingPanel
from .text import set_text


class Problems(Static):
    """Corrupt states and stalled waits in words: ``-bad`` (red) while any can only end
    in a hang, ``-warn`` while the only ones are stalls or hangs that are over; under
    them the verdicts that held earlier, with when."""

    def show(self, frame: Frame) -> None:
        problems, stalls = frame.problems, frame.stalls
        hang = bool(problems) or any(s.severity == "hang" for s in stalls)
        was_hung = any(seen.severity == "hang" for seen in frame.ended)
        self.set_class(hang, "-bad")
        self.set_class((bool(stalls) or was_hung) and not hang, "-warn")
        lines = [f"✖ {p}" for p in problems] + [
            f"{'✖' if s.severity == 'hang' else '◐'} {s.name}: {s.text}" for s in stalls
        ]
        if not lines:
            lines = ["page is consistent · no stalled wait" + (" now" if frame.ended else "")]
        lines += [seen.describe() for seen in frame.ended]
        set_text(self, "\n".join(lines), sized=True)


class ChannelView(Vertical):
    """Everything a frame says about the channel."""

    def compose(self) -> ComposeResult:
        with Horizontal(id="rings"):
            yield RingPanel("left", "left ring · client → server")
            yield RingPanel("right", "right ring · server → client")
        bits = PageBits(id="bits")
        bits.border_title = "each end: live byte · requests it made · its sleep"
        yield bits
        problems = Problems(id="problems")
        problems.border_title = "problems · who waits for whom"
        yield problems
        yield Details()

    def show(self, frame: Frame, identity: Identity | None = None) -> None:
        """Draw ``frame`` (and ``identity``, the ends as the source knows them)."""
        for panel, ring in zip(self.query(RingPanel), frame.rings, strict=True):
            panel.show(ring)
        self.query_one(PageBits).show(frame)
        self.query_one(Problems).show(frame)
        self.query_one(Details).show(frame, identity)
