"""Widgets of the inspector; each draws one part of a :class:`~..frames.Frame`."""
