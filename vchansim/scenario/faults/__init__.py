"""Fault kinds: one module each, found by the ``kind`` key through :data:`FAULT_KINDS`.

A new kind is a new module with a :class:`~.base.Fault` subclass, imported and listed
below; ``base.py`` documents what the class may say and do.  Import a kind's class from
its module (``from vchansim.scenario.faults.kill import KillFault``).
"""

from __future__ import annotations

from .base import EndpointTarget, Fault, RunnerTarget, parse_trigger
from .close import CloseFault
from .corrupt import CorruptFault
from .exhaust import ExhaustFault
from .kill import KillFault
from .notify import NotifyFault
from .pause import PauseFault
from .restart import RestartFault
from .stall import StallFault

#: Every fault kind, by the name a scenario file gives it.
FAULT_KINDS: dict[str, type[Fault]] = {
    cls.kind: cls
    for cls in (
        KillFault,
        CorruptFault,
        NotifyFault,
        StallFault,
        CloseFault,
        RestartFault,
        ExhaustFault,
        PauseFault,
    )
}

__all__ = ["FAULT_KINDS", "EndpointTarget", "Fault", "RunnerTarget", "parse_trigger"]
