"""The overview of one hub: every live channel with its fill, rate, state and problems;
choosing one opens its view.

The list is rebuilt from the hub's STATE every :data:`RELOAD` seconds, so channels come
and go while it is open; each listed channel is watched through a
:class:`~..live.LiveSource` of its own (read-only mappings, like its view's) sampled
every :data:`SAMPLE` seconds, often enough for the stall verdicts, which need a state
seen to last.  With no hub running it says so and keeps looking: starting the inspector
before the endpoints is a normal thing to do (``vchansim inspect --rundir DIR CHANNEL``
before ``vchansim run --rundir DIR``).  So a channel named to attach to is waited for
while the hub lists none; once it lists some, a name none of them matches is an error
that names them.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ...errors import BackendError
from ...rundir import RunDir
from ..frames import Frame
from ..live import ChannelInfo, HubLink, LiveSource, select_channel
from ..record import Recordings
from ..widgets.overview import Overview
from .base import TooSmall
from .dialogs import ErrorScreen
from .live import LiveScreen

#: Seconds between two reads of the hub's state.
RELOAD = 1.0
#: Seconds between two samples of every listed channel.
SAMPLE = 0.1
#: Seconds between two reads while a channel named to attach to has not appeared: a
#: scenario's channel may live for a second only, and must be caught as it comes up.
PENDING_RELOAD = 0.05


class ChannelsScreen(Screen[None]):
    """Channels of one run directory; ``attach`` names one to open as soon as it is seen."""

    BINDINGS: ClassVar = [
        Binding("enter", "attach", "Attach"),
        Binding("r", "reload", "Reload"),
    ]

    def __init__(
        self, rundir: RunDir, attach: str | None = None, recordings: Recordings | None = None
    ) -> None:
        super().__init__()
        self.rundir = rundir
        self.recordings = recordings if recordings is not None else Recordings()
        self.pending_attach = attach
        self.link: HubLink | None = None
        #: Whether the last read of the hub succeeded (else the status says why not).
        self.reachable = False
        self.channels: list[ChannelInfo] = []
        #: path -> the source watching that channel for its row (None: could not map it).
        self.watched: dict[str, LiveSource | None] = {}
        #: path -> its last frame.
        self.frames: dict[str, Frame] = {}

    def compose(self) -> ComposeResult:
        yield TooSmall()
        yield Static(f"vchansim inspect · channels in {self.rundir.path}", classes="title")
        yield Overview(id="channels")
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(RELOAD, self._reload_if_shown)
        self.set_interval(SAMPLE, self._sample_if_shown)
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

    def _sample_if_shown(self) -> None:
        if self.is_current:
            self.sample()

    def on_unmount(self) -> None:
        self._watch([])
        if self.link is not None:
            self.link.close()

    def _status(self, text: str, *, bad: bool = False) -> None:
        status = self.query_one("#status", Static)
        status.set_class(bad, "-bad")
        status.update(text)

    def list_channels(self) -> list[ChannelInfo]:
        """The hub's channels now, through a link kept open between reads (BackendError
        if the hub cannot be asked)."""
        if self.link is None:
            self.link = HubLink(self.rundir)
        return self.link.channels()

    def open_source(self, info: ChannelInfo) -> LiveSource:
        """A source watching ``info`` through read-only mappings of its own (BackendError
        if it went meanwhile)."""
        return LiveSource(self.rundir, info)

    def _read(self) -> list[ChannelInfo] | None:
        """The channels now, or None (status says why) if the hub cannot be asked."""
        try:
            channels = self.list_channels()
        except BackendError as exc:
            if self.link is not None:
                self.link.close()
                self.link = None
            self.reachable = False
            self._status(str(exc), bad=True)
            return None
        self.reachable = True
        return channels

    def _watch(self, channels: list[ChannelInfo]) -> None:
        """Watch exactly ``channels``: a source for each new one, the gone ones let go."""
        listed = {info.path: info for info in channels}
        for path in [p for p in self.watched if p not in listed]:
            source = self.watched.pop(path)
            self.frames.pop(path, None)
            if source is not None:
                source.close()
        for path, info in listed.items():
            if path not in self.watched:
                try:
                    self.watched[path] = self.open_source(info)
                except BackendError:  # gone between the listing and the mapping
                    self.watched[path] = None

    def sample(self) -> None:
        """A frame of every watched channel, and the rows redrawn from them."""
        for path, source in self.watched.items():
            if source is not None:
                self.frames[path] = source.frame()
        self.query_one(Overview).show([(c, self.frames.get(c.path)) for c in self.channels])
        if not self.reachable:  # no hub: the status says so already
            return
        flagged = sum(bool(f.problems or f.stalls) for f in self.frames.values())
        count = len(self.channels)
        if not count:
            self._status(
                "no channels yet: waiting for a vchan server to publish "
                + (repr(self.pending_attach) if self.pending_attach else "one")
            )
            return
        self._status(
            f"{count} channel{'s' if count != 1 else ''}"
            + (f" · {flagged} with problems" if flagged else "")
            + " · fill, rate: c→s s→c · enter opens one",
            bad=bool(flagged),
        )

    def action_reload(self) -> None:
        """Re-read the hub's state and redraw the list, keeping the cursor's channel."""
        channels = self._read()
        if channels is None:
            self.channels = []
            self._watch([])
            self.query_one(Overview).clear()
            return
        self.channels = channels
        self._watch(channels)
        self.sample()
        if self.pending_attach is not None and channels:
            wanted, self.pending_attach = self.pending_attach, None
            self._attach_path(wanted)

    def _chosen(self) -> ChannelInfo | None:
        path = self.query_one(Overview).chosen_path()
        return next((c for c in self.channels if c.path == path), None)

    def _attach_path(self, wanted: str) -> None:
        try:
            self.attach(select_channel(self.channels, wanted))
        except BackendError as exc:
            self.app.push_screen(ErrorScreen("cannot attach", str(exc)))

    def attach(self, info: ChannelInfo) -> None:
        """Open the live view of ``info``; an error dialog if it has gone meanwhile."""
        try:
            source = self.open_source(info)
        except BackendError as exc:
            self.app.push_screen(ErrorScreen("cannot attach", str(exc)))
            return
        self.app.push_screen(LiveScreen(source, self.recordings))

    def action_attach(self) -> None:
        chosen = self._chosen()
        if chosen is not None:
            self.attach(chosen)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_attach()
