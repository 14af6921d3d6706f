"""Which implementation of the per-message operations this process runs.

Two implementations share one interface: :mod:`vchansim.pycore`, plain Python and the
readable specification, and ``vchansim._fastpath``, the same operations in C, built at
install when a compiler is there.  The C one is used when it was built, because in Python
a small message costs about ten times what it costs libxenvchan; ``VCHANSIM_PURE=1``
asks for the Python one (to test it, or to rule the accelerator out).  Endpoints running
either interoperate: both follow the same protocol on the same shared memory.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING

#: The environment variable that selects the Python core.
PURE_ENV = "VCHANSIM_PURE"
#: The import path of each core, by the name :data:`NAME` reports.
MODULES = {"c": "vchansim._fastpath", "python": "vchansim.pycore"}


#: What every core provides.
INTERFACE = (
    "ChannelCore",
    "NotifyCore",
    "RingCore",
    "Waiter",
    "buffer_address",
    "eventfd_kick",
    "fetch_add_u64",
    "full_fence",
    "map_fixed",
    "wait_one",
)


def load(name: str) -> ModuleType:
    """The core called ``name`` ("c" or "python"); ImportError if it is not available
    here (the C core was not built, or libatomic is missing for the Python one), or if
    it is a build of older sources that lacks part of the interface."""
    module = import_module(MODULES[name])
    missing = [attr for attr in INTERFACE if not hasattr(module, attr)]
    if missing:
        raise ImportError(
            f"{module.__name__} lacks {', '.join(missing)}: it was built from older "
            "sources (rebuild it: python3 -c 'from setuptools import setup; setup()' "
            "build_ext --inplace)"
        )
    return module


def available() -> list[str]:
    """The cores this installation can run, the accelerator first."""
    names = []
    for name in MODULES:
        try:
            load(name)
        except ImportError:
            continue
        names.append(name)
    return names


def _select() -> tuple[str, ModuleType]:
    """The C core if it was built, else the Python one.  A C core that is there but
    cannot be used (built from older sources, or against another interpreter) is said
    on stderr in one line: the install is broken and runs ten times slower per message,
    which nobody should have to find out from a benchmark."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return "python", load("python")
    try:
        return "c", load("c")
    except ModuleNotFoundError:
        pass  # never built (no compiler at install): the Python core is the design
    except ImportError as exc:
        print(f"vchansim: using the Python ring core: {exc}", file=sys.stderr)
    return "python", load("python")


#: "c" or "python": the core this process uses.
NAME, _module = _select()

if TYPE_CHECKING:
    from .pycore import (
        ChannelCore,
        NotifyCore,
        RingCore,
        Waiter,
        buffer_address,
        eventfd_kick,
        fetch_add_u64,
        full_fence,
        map_fixed,
        wait_one,
    )
else:
    RingCore = _module.RingCore
    NotifyCore = _module.NotifyCore
    full_fence = _module.full_fence
    fetch_add_u64 = _module.fetch_add_u64
    eventfd_kick = _module.eventfd_kick
    wait_one = _module.wait_one
    buffer_address = _module.buffer_address
    map_fixed = _module.map_fixed
    Waiter = _module.Waiter
    ChannelCore = _module.ChannelCore

__all__ = [
    "INTERFACE",
    "MODULES",
    "NAME",
    "PURE_ENV",
    "ChannelCore",
    "NotifyCore",
    "RingCore",
    "Waiter",
    "available",
    "buffer_address",
    "eventfd_kick",
    "fetch_add_u64",
    "full_fence",
    "load",
    "map_fixed",
    "wait_one",
]
