"""The list of live channels on one hub; choosing one attaches to it.

The list is rebuilt from the hub's STATE every :data:`RELOAD` seconds, so channels come
and go while it is open.  With no hub running it says so and keeps looking: starting
the inspector before the endpoints is a normal thing to do (``vchansim inspect --rundir
DIR CHANNEL`` before ``vchansim run --rundir DIR``).  So a channel named to attach to is
waited for while the hub lists none; once it lists some, a name none of them matches is
an error that names them.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ...errors import BackendError
from ...rundir import RunDir
from ..live import COLUMNS, ChannelInfo, HubLink, LiveSource, select_channel
from .base import TooSmall
from .dialogs import ErrorScreen
from .live import LiveScreen

#: Seconds between two reads of the hub's state.
RELOAD = 1.0
#: Seconds between two reads while a channel named to attach to has not appeared: a
#: scenario's channel may live for a second only, and must be caught as it comes up.
PENDING_RELOAD = 0.05


class ChannelsScreen(Screen[None]):
    """Channels of one run directory; ``attach`` names one to open as soon as it is seen."""

    BINDINGS: ClassVar = [
        Binding("enter", "attach", "Attach"),
        Binding("r", "reload", "Reload"),
    ]

    def __init__(self, rundir: RunDir, attach: str | None = None) -> None:
        super().__init__()
        self.rundir = rundir
        self.pending_attach = attach
        self.link: HubLink | None = None
        self.channels: list[ChannelInfo] = []

    def compose(self) -> ComposeResult:
        yield TooSmall()
        yield Static(f"vchansim inspect · channels in {self.rundir.path}", classes="title")
        table: DataTable[str] = DataTable(id="channels", cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS)
        yield table
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(RELOAD, self._reload_if_shown)
        if self.pending_attach is not None:
            self.pending_timer = self.set_interval(PENDING_RELOAD, self._reload_if_pending)

    def on_screen_resume(self) -> None:
        """Shown (first, or back from a channel or a dialog): read the hub at once."""
        self.action_reload()

    def _reload_if_shown(self) -> None:
        if self.is_current:
            self.action_reload()

    def _reload_if_pending(self) -> None:
        if self.pending_attach is None:
            self.pending_timer.stop()
        elif self.is_current:
            self.action_reload()

    def on_unmount(self) -> None:
        if self.link is not None:
            self.link.close()

    def _status(self, text: str, *, bad: bool = False) -> None:
        status = self.query_one("#status", Static)
        status.set_class(bad, "-bad")
        status.update(text)

    def _read(self) -> list[ChannelInfo] | None:
        """The channels now, or None (status says why) if the hub cannot be asked."""
        try:
            if self.link is None:
                self.link = HubLink(self.rundir)
            return self.link.channels()
        except BackendError as exc:
            if self.link is not None:
                self.link.close()
                self.link = None
            self._status(str(exc), bad=True)
            return None

    def action_reload(self) -> None:
        """Re-read the hub's state and redraw the list, keeping the cursor's channel."""
        channels = self._read()
        if channels is None:
            self.channels = []
            self.query_one(DataTable).clear()
            return
        table: DataTable[str] = self.query_one(DataTable)
        chosen = self._chosen()
        self.channels = channels
        table.clear()
        for info in channels:
            table.add_row(*info.row(), key=info.path)
        if chosen is not None and chosen.path in {c.path for c in channels}:
            table.move_cursor(row=[c.path for c in channels].index(chosen.path))
        count = len(channels)
        self._status(
            f"{count} channel{'s' if count != 1 else ''} · enter, or a click on the "
            "highlighted row, attaches"
            if count
            else "no channels yet: waiting for a vchan server to publish "
            + (repr(self.pending_attach) if self.pending_attach else "one")
        )
        if self.pending_attach is not None and channels:
            wanted, self.pending_attach = self.pending_attach, None
            self._attach_path(wanted)

    def _chosen(self) -> ChannelInfo | None:
        row = self.query_one(DataTable).cursor_row
        return self.channels[row] if 0 <= row < len(self.channels) else None

    def _attach_path(self, wanted: str) -> None:
        try:
            self.attach(select_channel(self.channels, wanted))
        except BackendError as exc:
            self.app.push_screen(ErrorScreen("cannot attach", str(exc)))

    def attach(self, info: ChannelInfo) -> None:
        """Open the live view of ``info``; an error dialog if it has gone meanwhile."""
        try:
            source = LiveSource(self.rundir, info)
        except BackendError as exc:
            self.app.push_screen(ErrorScreen("cannot attach", str(exc)))
            return
        self.app.push_screen(LiveScreen(source))

    def action_attach(self) -> None:
        chosen = self._chosen()
        if chosen is not None:
            self.attach(chosen)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_attach()
