"""Where the inspector's frames come from: the one interface both data sources implement.

The channel view draws :class:`~.frames.Frame`\\ s and nothing else.  A
:class:`~.live.LiveSource` makes them by sampling a control page mapped read-only from
the hub; a :class:`~.playback.ReplaySource` makes them from a trace written by
``vchansim run --trace``.  Screens that need more than frames (the replay transport)
talk to the concrete class; the widgets only ever see this protocol.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .frames import Frame
from .identity import Identity


@runtime_checkable
class Source(Protocol):
    """A channel to look at, one frame at a time."""

    #: Which channel this is, in one line (domains and path, or the trace's name).
    title: str
    #: Short word for the header: "live" or "replay".
    kind: str

    def frame(self) -> Frame:
        """The channel now (live: sampled at this call; replay: at the play position)."""
        ...

    def identity(self) -> Identity | None:
        """Who the ends are and where the channel is, as far as the source knows."""
        ...

    def notice(self) -> str:
        """Something the viewer must know about the source itself, or "" (e.g. "gone")."""
        ...

    def close(self) -> None:
        """Release what the source holds (mappings, hub connection, files)."""
        ...
