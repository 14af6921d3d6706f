"""Test helpers: the ring and notifier shape over each core this installation has.

The model and edge tests run once per core (``@pytest.mark.parametrize("core", CORES)``),
so the Python specification and the C accelerator are held to the same behaviour;
:func:`channels_on` runs whole channels on one core.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import pytest

from vchansim import channel
from vchansim import core as cores
from vchansim.ring import NotifierFace, RingFace

#: The cores available here, accelerator first.
CORES = cores.available()


@cache
def faces(name: str) -> tuple[type[RingFace], type[NotifierFace]]:
    """``Ring`` and ``Notifier`` classes over core ``name``."""
    module = cores.load(name)
    ring = type("Ring", (RingFace, module.RingCore), {"__slots__": ("buf", "mask")})
    notifier = type("Notifier", (NotifierFace, module.NotifyCore), {"__slots__": ()})
    return ring, notifier


@contextmanager
def channels_on(name: str) -> Iterator[None]:
    """Channels opened inside run on core ``name``, whichever core the process selected."""
    ring, notifier = faces(name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(channel, "Ring", ring)
        patch.setattr(channel, "Notifier", notifier)
        patch.setattr(channel, "Waiter", cores.load(name).Waiter)
        yield
