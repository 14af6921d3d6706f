"""A live channel: the channel view of a :class:`~..live.LiveSource`, with the keys a
debugger needs while the channel runs -- pause the picture to read it, look at the last
minutes, record what is seen to a trace.

Every tick samples the channel, paused or not: the sample goes into the history and
into the recording under way, and only the picture on screen is held.  So nothing is
lost while paused, and going live again shows the history up to now.
"""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding
from textual.widgets import Static

from ...trace import TraceError
from ..frames import Frame
from ..history import History
from ..live import LiveSource
from ..record import Recording, Recordings
from ..widgets.details import Details
from ..widgets.history import HistoryPanel
from .channel import ChannelScreen


class LiveScreen(ChannelScreen):
    """One live channel; ``space`` freezes the picture (the channel itself runs on),
    ``h`` shows the history, ``r`` starts or stops a recording."""

    BINDINGS: ClassVar = [
        Binding("space", "pause", "Pause"),
        Binding("h", "details('history')", "History"),
        Binding("r", "record", "Record"),
    ]

    source: LiveSource

    def __init__(self, source: LiveSource, recordings: Recordings | None = None) -> None:
        super().__init__(source)
        self.held: Frame | None = None
        self.history = History()
        self.recordings = recordings if recordings is not None else Recordings()
        self.recording: Recording | None = None
        #: Why the last recording could not start or go on ("" if nothing went wrong).
        self.record_error = ""
        self._drawn_slot = -1

    # Textual calls each class's handler in turn, this one first: a recording starts
    # before the first frame is sampled, and ends before the source is closed.
    def on_mount(self) -> None:
        if self.recordings.at_once:
            self.action_record()

    def on_unmount(self) -> None:
        self._stop_recording()

    def next_frame(self) -> Frame:
        frame = self.source.frame()
        self.history.add(frame)
        if self.recording is not None and self.source.sample is not None:
            try:
                self.recording.add(self.source.sample)
            except TraceError as exc:
                self._record_failed(exc, f" after {self.recording.samples} samples")
                self.recording = None
        return self.held if self.held is not None else frame

    def redraw(self) -> None:
        super().redraw()
        if self.held is None and self.query_one(Details).current == "history":
            newest = self.history.slots[-1].number if self.history.slots else -1
            if newest != self._drawn_slot:  # a new slot: ten times a second at most
                self._drawn_slot = newest
                self.query_one(HistoryPanel).show(self.history)
        status = self.query_one("#status", Static)
        status.set_class(bool(self.record_error), "-bad")
        status.set_class(self.recording is not None and not self.record_error, "-recording")

    def status(self, frame: Frame) -> str:
        if self.record_error:
            return f"✖ {self.record_error}"
        recording = self.recording
        rec = f"● rec {recording.samples} → {recording.path.name}" if recording else ""
        if self.held is not None:
            going_on = "history and recording go on" if recording else "history goes on"
            return " · ".join(
                part
                for part in (f"⏸ paused at t {frame.time:.2f} s", rec, going_on, "space resumes")
                if part
            )
        return " · ".join(part for part in (rec, super().status(frame)) if part)

    def action_pause(self) -> None:
        """Hold the frame on screen, or go live again."""
        self.held = None if self.held is not None else self.frame
        self._drawn_slot = -1
        self.redraw()

    def action_record(self) -> None:
        """Start recording to the next file, or stop and say how many samples it has."""
        if self.recording is not None:
            self._stop_recording()
            return
        self.record_error = ""
        try:
            self.recording = self.recordings.start(self.source.info)
        except TraceError as exc:
            self._record_failed(exc, "")

    def _stop_recording(self) -> None:
        recording, self.recording = self.recording, None
        if recording is None:
            return
        try:
            self.notify(self.recordings.stop(recording), timeout=5)
        except TraceError as exc:
            self._record_failed(exc, f" after {recording.samples} samples")

    def _record_failed(self, exc: TraceError, when: str) -> None:
        self.record_error = f"recording stopped{when}: {exc}" if when else str(exc)
        self.recordings.done.append(self.record_error)
        self.notify(self.record_error, severity="error", timeout=8)
