"""One ring of the channel: a ring diagram, its indices, fill bar, wraps and throughput.

The diagram draws the buffer as a circle in braille dots, read clockwise from the top:
the thick coloured arc runs from ``cons`` to ``prod`` -- the bytes in flight -- and the
thin outline is free space.  Seeing the arc travel round the circle is the point of the
inspector: a stalled consumer, a full ring, a producer racing ahead are all visible at a
glance.  Colours come from component classes, so they live in the stylesheet.
"""

from __future__ import annotations

import math
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Sparkline, Static

from ..frames import RingFrame
from .text import set_text

#: Braille dot bits by (column, row) inside a 2x4 cell.
_DOTS = {
    (0, 0): 0x01,
    (0, 1): 0x02,
    (0, 2): 0x04,
    (1, 0): 0x08,
    (1, 1): 0x10,
    (1, 2): 0x20,
    (0, 3): 0x40,
    (1, 3): 0x80,
}
_BRAILLE = 0x2800
#: Dots of thickness of the filled arc and of the free-space outline.
_ARC, _OUTLINE = 2.6, 1.1


_UNITS = ("B", "KiB", "MiB", "GiB")


def human_bytes(count: float) -> str:
    """``78 B``, ``12.3 KiB``, ``1.0 MiB``: short enough for an 80-column panel."""
    power = 0
    while count >= 1024 and power < len(_UNITS) - 1:
        count /= 1024
        power += 1
    return f"{count:.0f} B" if power == 0 else f"{count:.1f} {_UNITS[power]}"


def _in_flight(frac: float, start: float, length: float) -> bool:
    """Whether ``frac`` of the way round lies in the arc of ``length`` from ``start``."""
    return (frac - start) % 1.0 < length


def ring_cells(
    start: float, length: float, width: int, height: int
) -> list[list[tuple[str, bool]]]:
    """The diagram as rows of (braille character, cell shows in-flight bytes).

    ``start`` and ``length`` are fractions of the ring (length 1 or more: full).  Cells
    are 2x4 dots; with the usual 1:2 cell aspect the dots are square, so a square dot
    grid gives a round circle.
    """
    cols, rows = 2 * width, 4 * height
    cx, cy = (cols - 1) / 2, (rows - 1) / 2
    outer = min(cx, cy) + 0.5
    grid = []
    for row in range(height):
        line = []
        for col in range(width):
            bits, lit = 0, False
            for (dx, dy), bit in _DOTS.items():
                x, y = 2 * col + dx - cx, 4 * row + dy - cy
                radius = math.hypot(x, y)
                frac = (math.atan2(x, -y) / (2 * math.pi)) % 1.0
                filled = length >= 1 or _in_flight(frac, start, length)
                depth = outer - radius
                if 0 <= depth < (_ARC if filled else _OUTLINE):
                    bits |= bit
                    lit = lit or filled
            line.append((chr(_BRAILLE + bits), lit))
        grid.append(line)
    return grid


class RingDiagram(Widget):
    """The ring as a circle, in-flight bytes as a thick arc from cons to prod."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"ring-diagram--fill", "ring-diagram--free"}

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.arc = (0.0, 0.0)

    def show(self, ring: RingFrame) -> None:
        size = ring.size
        arc = (0.0, 0.0) if size is None else ((ring.cons & (size - 1)) / size, ring.fill / size)
        if arc != self.arc:
            self.arc = arc
            self.refresh()

    def render(self) -> Text:
        fill: Style = self.get_component_rich_style("ring-diagram--fill")
        free: Style = self.get_component_rich_style("ring-diagram--free")
        text = Text(no_wrap=True)
        rows = ring_cells(*self.arc, self.size.width, self.size.height)
        for number, row in enumerate(rows):
            for char, lit in row:
                text.append(char, fill if lit else free)
            if number < len(rows) - 1:
                text.append("\n")
        return text


class FillBar(Widget):
    """Bytes in flight as a horizontal bar (full width = the ring's size)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"fill-bar--used", "fill-bar--free"}

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.fraction = 0.0

    def show(self, fraction: float) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        if fraction != self.fraction:
            self.fraction = fraction
            self.refresh()

    def render(self) -> Text:
        width = self.size.width
        used = round(self.fraction * width)
        if used == 0 and self.fraction > 0:
            used = 1  # a single byte in flight must not look like an empty ring
        text = Text(no_wrap=True)
        text.append("█" * used, self.get_component_rich_style("fill-bar--used"))
        text.append("░" * (width - used), self.get_component_rich_style("fill-bar--free"))
        return text


def _index_line(name: str, index: int, position: int | None) -> str:
    where = "?" if position is None else str(position)
    return f"{name} 0x{index:08x} @ {where}"


def describe(ring: RingFrame) -> str:
    """The numbers next to the diagram: order and size, both indices, wraps."""
    size = ring.size
    order = f"order {ring.order}" + (
        f" · {human_bytes(size)}" if size is not None else " · INVALID"
    )
    wraps = "?" if ring.wraps is None else str(ring.wraps)
    return "\n".join(
        (
            order,
            _index_line("cons", ring.cons, ring.position(ring.cons)),
            _index_line("prod", ring.prod, ring.position(ring.prod)),
            f"wraps {wraps}",
        )
    )


def fill_text(ring: RingFrame) -> str:
    size = ring.size
    if size is None:
        return human_bytes(ring.fill)
    if ring.fill > size:
        return f"{human_bytes(ring.fill)} > ring"
    return f"{human_bytes(ring.fill)} {100 * ring.fill // size:3d}%"


class RingPanel(Vertical):
    """Everything about one ring; ``-corrupt`` is set while its indices are impossible."""

    def __init__(self, name: str, title: str, **kwargs: object) -> None:
        super().__init__(id=f"ring-{name}", classes="ring-panel", **kwargs)  # type: ignore[arg-type]
        self.border_title = title

    def compose(self) -> ComposeResult:
        with Horizontal(classes="ring-top"):
            yield RingDiagram()
            yield Static(classes="ring-numbers")
        with Horizontal(classes="ring-fill"):
            yield Static("fill", classes="ring-label")
            yield FillBar()
            yield Static(classes="ring-fill-text")
        with Horizontal(classes="ring-rate"):
            yield Static(classes="ring-rate-text")
            yield Sparkline((), summary_function=max)

    def show(self, ring: RingFrame) -> None:
        """Draw ``ring``."""
        self.set_class(ring.corrupt, "-corrupt")
        self.query_one(RingDiagram).show(ring)
        set_text(self.query_one(".ring-numbers", Static), describe(ring))
        size = ring.size
        self.query_one(FillBar).show(ring.fill / size if size else 1.0)
        set_text(self.query_one(".ring-fill-text", Static), fill_text(ring))
        set_text(self.query_one(".ring-rate-text", Static), f"{human_bytes(ring.rate)}/s")
        sparkline = self.query_one(Sparkline)
        if sparkline.data != ring.history:
            sparkline.data = ring.history
