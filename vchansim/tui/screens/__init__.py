"""Screens of the inspector: the channel list, a live channel, a replay, help and errors."""
