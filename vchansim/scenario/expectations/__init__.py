"""Expectation kinds: one module each, its judge beside it, found by the ``kind`` key
through :data:`EXPECTATION_KINDS`.

A new kind is a new module with an :class:`~.base.Expectation` subclass, imported and
listed below.
"""

from __future__ import annotations

from .base import Expectation, Verdict
from .clean import Clean
from .close_seen import CloseSeen
from .delivered import Delivered
from .error import RaisesError
from .integrity import Integrity
from .no_hang import NoHang
from .no_leaks import NoLeaks

#: Every expectation kind, by the name a scenario file gives it.
EXPECTATION_KINDS: dict[str, type[Expectation]] = {
    cls.kind: cls for cls in (Delivered, Integrity, CloseSeen, RaisesError, NoHang, NoLeaks, Clean)
}

__all__ = ["EXPECTATION_KINDS", "Expectation", "Verdict"]
