"""The inspector application: live channels of a hub, or the replay of a trace.

Every failure the user can cause ends up on screen in words, never as a traceback: a
channel that does not exist or went away, or a trace that is truncated or not a trace,
in an :class:`~.screens.dialogs.ErrorScreen`; no hub at all, in the channel list's status
line (which keeps looking).  A replay that cannot start exits with status 1.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import ClassVar

from rich.console import Console
from textual.app import App
from textual.binding import Binding

from ..rundir import RunDir
from ..trace import TraceError
from .playback import ReplaySource
from .record import Recordings
from .screens.base import MIN_HEIGHT, MIN_WIDTH, TALL, TALLER
from .screens.channels import ChannelsScreen
from .screens.dialogs import ErrorScreen, HelpScreen
from .screens.replay import ReplayScreen

#: The CSS classes the app takes by terminal width, and by height: taller terminals get
#: bigger ring pictures (the stylesheet sizes them per class).
_WIDTH_CLASSES: list[tuple[int, str]] = [(0, "-too-narrow"), (MIN_WIDTH, "-wide-enough")]
_HEIGHT_CLASSES: list[tuple[int, str]] = [
    (0, "-too-short"),
    (MIN_HEIGHT, "-tall-enough"),
    (TALL, "-tall"),
    (TALLER, "-taller"),
]


class InspectorApp(App[int]):
    """``rundir`` (live channels, optionally attaching to ``attach``, ``record``: into
    that trace file) or ``trace``."""

    CSS_PATH = "inspector.tcss"
    TITLE = "vchansim inspect"
    HORIZONTAL_BREAKPOINTS = _WIDTH_CLASSES
    VERTICAL_BREAKPOINTS = _HEIGHT_CLASSES
    BINDINGS: ClassVar = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
    ]
    ENABLE_COMMAND_PALETTE = False

    def __init__(
        self,
        *,
        rundir: RunDir | None = None,
        attach: str | None = None,
        trace: str | Path | None = None,
        autoplay: bool = True,
        record: Path | None = None,
    ) -> None:
        super().__init__()
        if (rundir is None) == (trace is None):
            raise ValueError("inspect either a run directory or a trace")
        self.rundir = rundir
        self.attach = attach
        self.trace = trace
        self.autoplay = autoplay
        #: The recordings of live channels (``record``: the first channel view records
        #: to that file at once).
        self.recordings = Recordings(record)
        #: What the app returns when quit: 1 once it could not show what it was asked to.
        self.status = 0

    def on_mount(self) -> None:
        if self.rundir is not None:
            self.push_screen(ChannelsScreen(self.rundir, self.attach, self.recordings))
            return
        assert self.trace is not None
        try:
            source = ReplaySource.open(self.trace)
        except TraceError as exc:
            self.status = 1
            self.push_screen(ErrorScreen("cannot replay", str(exc)), lambda _: self.action_quit())
            return
        self.push_screen(ReplayScreen(source, autoplay=self.autoplay), lambda _: self.action_quit())

    def action_quit(self) -> None:  # type: ignore[override]
        self.exit(self.status)

    def action_help(self) -> None:
        """Show every key the current screen answers to, shown in the footer or not."""
        keys = {
            self.get_key_display(binding): binding.description
            for binding in (*_declared_bindings(self.screen), *_declared_bindings(self))
        }
        self.push_screen(HelpScreen(keys.items()))

    def export_text(self) -> str:
        """The screen as plain text, as a user sees it (docs captures, and tests that
        check what is on screen rather than how widgets store it)."""
        width, height = self.size
        console = Console(
            width=width, height=height, file=io.StringIO(), record=True, color_system=None
        )
        console.print(
            self.screen._compositor.render_update(full=True, screen_stack=self._background_screens)
        )
        return console.export_text()


def _declared_bindings(node: object) -> list[Binding]:
    """The bindings our own classes declare for ``node`` (not Textual's built-in ones)."""
    return [
        binding
        for cls in type(node).__mro__
        if cls.__module__.startswith("vchansim.")
        for binding in vars(cls).get("BINDINGS", ())
        if isinstance(binding, Binding) and binding.description
    ]
