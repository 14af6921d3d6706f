"""The replay timeline: the run from start to end, faults marked, the play position shown.

Clicking it seeks there.  Injected faults are the marks that matter (a red ``✖``);
endpoint events (connected, killed, closed...) are drawn lighter, under any fault at the
same column.  The play position has a row of its own (``▼`` over the track), so it never
hides a mark.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.message import Message
from textual.widget import Widget

from ..playback import Mark

_GLYPHS = {"endpoint": "┼", "fault": "✖"}


class Timeline(Widget):
    """One line for the play position, one of track and marks, one of times."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "timeline--played",
        "timeline--track",
        "timeline--fault",
        "timeline--endpoint",
        "timeline--cursor",
        "timeline--times",
    }

    class Seek(Message):
        """The user clicked the timeline at trace time ``t``."""

        def __init__(self, t: float) -> None:
            super().__init__()
            self.t = t

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.start = 0.0
        self.end = 0.0
        self.now = 0.0
        self.marks: Sequence[Mark] = ()

    def show(self, start: float, end: float, now: float, marks: Sequence[Mark]) -> None:
        shown = (start, end, now, marks)
        if shown != (self.start, self.end, self.now, self.marks):
            self.start, self.end, self.now, self.marks = shown
            self.refresh()

    def _column(self, t: float) -> int:
        span = self.end - self.start
        last = max(self.size.width - 1, 0)
        return 0 if span <= 0 else round((t - self.start) / span * last)

    def _time_at(self, column: int) -> float:
        last = max(self.size.width - 1, 1)
        return self.start + (self.end - self.start) * min(max(column, 0), last) / last

    def _track(self) -> Text:
        width = self.size.width
        cursor = self._column(self.now)
        glyphs = ["─"] * width
        kinds = ["played" if col <= cursor else "track" for col in range(width)]
        for kind in ("endpoint", "fault"):  # faults drawn last, so they win a shared column
            for mark in self.marks:
                if mark.kind == kind and 0 <= (col := self._column(mark.t)) < width:
                    glyphs[col], kinds[col] = _GLYPHS[kind], kind
        text = Text(no_wrap=True)
        for glyph, kind in zip(glyphs, kinds, strict=True):
            text.append(glyph, self.get_component_rich_style(f"timeline--{kind}"))
        return text

    def _cursor(self) -> Text:
        column = self._column(self.now)
        return Text(" " * column + "▼", self.get_component_rich_style("timeline--cursor"))

    def _times(self) -> Text:
        left, right = f"{self.start:.2f} s", f"{self.end:.2f} s"
        gap = max(self.size.width - len(left) - len(right), 1)
        return Text(left + " " * gap + right, self.get_component_rich_style("timeline--times"))

    def render(self) -> Text:
        return Text("\n").join((self._cursor(), self._track(), self._times()))

    def on_click(self, event: events.Click) -> None:
        """Seek to the time under the pointer, on any of the timeline's rows."""
        self.post_message(self.Seek(self._time_at(event.x)))
