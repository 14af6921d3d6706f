"""Dialogs: keyboard help, and errors shown on screen instead of a traceback.

Dialogs are small and shrink with the terminal, so unlike full screens they stay visible
in a terminal under 80x24: an error must be readable however cramped the window is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

_DISMISS = (
    Binding("escape", "dismiss", "Close", show=False),
    Binding("enter", "dismiss", "Close", show=False),
)


#: A dialog takes no size classes: it is never too small for its box.
_NO_CLASSES: list[tuple[int, str]] = []


class Dialog(ModalScreen[None]):
    """A modal box over the current screen, exempt from the too-small rule."""

    HORIZONTAL_BREAKPOINTS = _NO_CLASSES
    VERTICAL_BREAKPOINTS = _NO_CLASSES


class HelpScreen(Dialog):
    """The keys of the screen it was opened over, with what they do."""

    BINDINGS: ClassVar = [*_DISMISS, Binding("question_mark", "dismiss", "Close", show=False)]

    def __init__(self, keys: Iterable[tuple[str, str]]) -> None:
        super().__init__()
        self.keys = list(keys)

    def compose(self) -> ComposeResult:
        lines = [f"{key:>12}  {what}" for key, what in self.keys]
        with Vertical(classes="dialog help") as dialog:
            dialog.border_title = "keys"
            dialog.border_subtitle = "esc closes"
            yield Static("\n".join(lines), id="help-keys", markup=False)


class ErrorScreen(Dialog):
    """Something could not be shown; says what and why, then waits to be closed."""

    BINDINGS: ClassVar = list(_DISMISS)

    def __init__(self, title: str, message: str) -> None:
        super().__init__()
        self.title_text = title
        self.message = message

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog error") as dialog:
            dialog.border_title = self.title_text
            dialog.border_subtitle = "enter or esc closes"
            yield Static(self.message, id="error-message", markup=False)
