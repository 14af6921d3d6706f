"""What every inspector screen shares: the "terminal too small" notice.

The app sets breakpoint classes on each screen (``-too-narrow``, ``-too-short``); the
stylesheet then hides the screen's content and shows :class:`TooSmall` instead, so a
cramped terminal gets a sentence, not a mangled picture.  Every screen yields one as
its first child.  It fills the screen, so it is repainted whenever the terminal is
resized and always quotes the current size.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

MIN_WIDTH = 80
MIN_HEIGHT = 24
#: Heights from which the ring pictures grow (``-tall``, ``-taller`` in the stylesheet).
TALL = 36
TALLER = 50


class TooSmall(Static):
    """Says how big the terminal is and how big it must be."""

    def render(self) -> Text:
        width, height = self.app.size
        return Text(
            f"The terminal is {width}x{height}; the inspector needs at least "
            f"{MIN_WIDTH}x{MIN_HEIGHT}.\nEnlarge the window, or press q to quit."
        )
