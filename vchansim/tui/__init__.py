"""``vchansim inspect``: a terminal inspector for vchan control pages, live or replayed.

:class:`~.app.InspectorApp` is the application; :mod:`.source` is the one interface its
screens draw from, implemented by :class:`~.live.LiveSource` (a channel on a hub, its
control page mapped read-only) and :class:`~.playback.ReplaySource` (a trace).
"""
