"""Under the channel view, one of: the bytes in flight, who the ends are, or (live) the
history of the last minutes.

A :class:`~textual.widgets.ContentSwitcher` so that the space a terminal has left over
goes to one view at a time; the screen's keys choose (``b`` bytes, ``i`` ends, ``h`` history).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import ContentSwitcher, Static

from ..frames import Frame
from ..identity import Identity
from .hexdump import HexDump
from .history import HistoryPanel
from .text import set_text

#: The views, by id, with the panel title each gets.
VIEWS = {
    "bytes": "bytes in flight · from cons · b",
    "ends": "ends · xenstore · grants · i",
    "history": "history · fill, events, notify changes · h",
}


class Details(ContentSwitcher):
    """The detail views; ``current`` is the one shown."""

    def __init__(self) -> None:
        super().__init__(id="details", initial="bytes")

    def compose(self) -> ComposeResult:
        with Horizontal(id="bytes"):
            yield HexDump(id="hex-left", classes="hex")
            yield HexDump(id="hex-right", classes="hex")
        yield Static(id="ends", markup=False)
        yield HistoryPanel(id="history")

    def on_mount(self) -> None:
        self.border_title = VIEWS["bytes"]

    def choose(self, view: str) -> None:
        self.current = view
        self.border_title = VIEWS[view]
        self.set_class(view == "history", "-history")
        self.set_class(view == "ends", "-ends")

    def show(self, frame: Frame, identity: Identity | None) -> None:
        why = "n/a in a replay: a trace records indices"
        for name, data in zip(("left", "right"), frame.in_flight, strict=True):
            ring = getattr(frame, name)
            reason = "indices impossible: nothing to read" if ring.corrupt else why
            self.query_one(f"#hex-{name}", HexDump).show(data, reason)
        lines = identity.lines() if identity is not None else ["n/a"]
        set_text(self.query_one("#ends", Static), "\n".join(lines))
