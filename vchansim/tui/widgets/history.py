"""The history panel: the last minutes of a live channel, one series per row on a
shared time axis.

Rows, top to bottom: fill of the left ring (client → server) and of the right ring
(server → client) as a share of each ring; events per second in both directions,
scaled to the highest column shown; where the notify bytes changed (``s``: the server's
requests, in ``cli_notify``; ``c``: the client's, in ``srv_notify``; ``b``: both in the
same column, so neither hides the other); then the time axis, in seconds since the
channel started.  The three bar series share the rows the panel has, each as tall as
the others, so a taller terminal gets finer bars.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.widget import Widget

from .. import history as model
from ..frames import RingFrame
from ..history import Column, History

#: Cells of the series names on the left, and of the current values on the right.
LABEL = 9
VALUE = 9
_LEVELS = " ▁▂▃▄▅▆▇█"
_ASKED = {(True, False): "s", (False, True): "c", (True, True): "b"}


def bars(values: list[float | None], rows: int) -> list[str]:
    """``values`` (0..1, None: no data) as bars ``rows`` cells tall, top row first; any
    value above 0 shows at least one eighth of a cell."""
    levels = [0 if v is None or v <= 0 else max(1, round(min(v, 1.0) * 8 * rows)) for v in values]
    return [
        "".join(_LEVELS[min(max(level - (rows - 1 - row) * 8, 0), 8)] for level in levels)
        for row in range(rows)
    ]


def rate_text(rate: float | None) -> str:
    if rate is None:
        return "n/a"
    for scale, unit in ((1e6, "M"), (1e3, "k")):
        if rate >= scale:
            return f"{rate / scale:.1f}{unit}/s"
    return f"{rate:.0f}/s"


def asked_text(byte: int) -> str:
    """A notify byte's requests: W (0x1, WRITE) and R (0x2, READ), · where clear."""
    return ("W" if byte & 0x1 else "·") + ("R" if byte & 0x2 else "·")


def duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:.1f} s"


class HistoryPanel(Widget):
    """Draws a :class:`~..history.History`; :meth:`show` gives it the one to draw."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "history--label",
        "history--fill",
        "history--events",
        "history--notify",
        "history--axis",
    }

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.history: History | None = None

    def show(self, history: History) -> None:
        self.history = history
        self.refresh()

    def _row(self, label: str, cells: str, value: str, style: str) -> Text:
        text = Text(no_wrap=True)
        text.append(f"{label:<{LABEL}} ", self.get_component_rich_style("history--label"))
        text.append(cells, self.get_component_rich_style(f"history--{style}"))
        text.append(f" {value:>{VALUE}}", self.get_component_rich_style("history--label"))
        return text

    def _series(
        self, label: str, values: list[float | None], value: str, style: str, rows: int
    ) -> list[Text]:
        lines = bars(values, rows)
        return [
            self._row(label if row == 0 else "", line, value if row == 0 else "", style)
            for row, line in enumerate(lines)
        ]

    def _axis(self, history: History, width: int) -> Text:
        start, end = history.span(width)
        left, right = f"{max(start, 0.0):.1f}", f"{end:.1f} s"
        middle = f"{duration(end - max(start, 0.0))} shown · keeps {duration(model.WINDOW)}"
        gap = width - len(left) - len(right) - len(middle)
        if gap < 2:
            middle, gap = "", width - len(left) - len(right)
        cells = left + " " * (gap // 2) + middle + " " * (gap - gap // 2) + right
        return self._row("t", cells[:width], "", "axis")

    def render(self) -> Text:
        history = self.history
        width = max(self.size.width - LABEL - VALUE - 2, 1)
        rows = max((self.size.height - 2) // 3, 1)
        if history is None or history.last is None:
            return Text("no samples yet", no_wrap=True)
        columns = history.columns(width)
        last = history.last

        def series(pick: str) -> list[float | None]:
            return [None if c is None else getattr(c, pick) for c in columns]

        peak = max((c.rate or 0.0 for c in columns if c is not None), default=0.0)
        rates = [None if c is None or c.rate is None else c.rate / (peak or 1.0) for c in columns]
        newest: Column | None = columns[-1]
        lines = [
            *self._series("c→s fill", series("left"), _percent(last.left), "fill", rows),
            *self._series("s→c fill", series("right"), _percent(last.right), "fill", rows),
            *self._series(
                "events/s", rates, rate_text(newest.rate if newest else None), "events", rows
            ),
            self._row(
                "notify",
                "".join(
                    " " if c is None else _ASKED.get((c.server_asked, c.client_asked), " ")
                    for c in columns
                ),
                f"s{asked_text(last.page.cli_notify)} c{asked_text(last.page.srv_notify)}",
                "notify",
            ),
            self._axis(history, width),
        ]
        return Text("\n").join(lines)


def _percent(ring: RingFrame) -> str:
    if ring.size is None or ring.fill > ring.size:
        return "> ring"
    return f"{100 * ring.fill // ring.size}%"
