"""Updating text only when it changes.

The channel view is redrawn 25 times a second, but most of it is the same from one frame
to the next; Textual re-renders whatever is updated, so updating unchanged text would
spend a core on repainting identical characters.
"""

from __future__ import annotations

from textual.widgets import Static


def set_text(widget: Static, text: str, *, sized: bool = False) -> None:
    """Show ``text`` in ``widget`` unless it already does.  ``sized``: the widget's size
    follows its text (``height: auto``), so a change re-runs the layout."""
    if widget.content != text:
        widget.update(text, layout=sized)
