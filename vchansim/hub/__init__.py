"""The hub: the emulated hypervisor, kernel drivers and xenstored of the ``shm`` backend.

One daemon per run directory hands out shared pages and eventfd doorbells and serves
XenStore; endpoints then talk to each other directly.  :func:`open_hub` is what a
backend calls; :func:`.server.run_hub` is the daemon itself, imported only by the
process that runs it (an endpoint loads the client side alone).  The wire contract is
docs/hub-protocol.md.
"""

from __future__ import annotations

from .launcher import ensure_hub, hub_running, open_hub, start_hub
from .protocol import HubConnection, HubGoneError, Op, Reply

__all__ = [
    "HubConnection",
    "HubGoneError",
    "Op",
    "Reply",
    "ensure_hub",
    "hub_running",
    "open_hub",
    "start_hub",
]
