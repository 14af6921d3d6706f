"""The hub: the emulated hypervisor, kernel drivers and xenstored of the ``shm`` backend.

One daemon per run directory hands out shared pages and eventfd doorbells and serves
XenStore; endpoints then talk to each other directly.  :func:`open_hub` is what a
backend calls; :func:`run_hub` is the daemon itself.  The wire contract is
docs/hub-protocol.md.
"""

from __future__ import annotations

from .launcher import ensure_hub, hub_running, open_hub, start_hub
from .protocol import HubConnection, HubGoneError, Op, Reply
from .server import DEFAULT_IDLE, Hub, run_hub

__all__ = [
    "DEFAULT_IDLE",
    "Hub",
    "HubConnection",
    "HubGoneError",
    "Op",
    "Reply",
    "ensure_hub",
    "hub_running",
    "open_hub",
    "run_hub",
    "start_hub",
]
