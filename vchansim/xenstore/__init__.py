"""XenStore for vchansim: the wire codec, an emulated xenstored and a small client.

- :mod:`.wire` -- message framing, types, error names, permission strings (no I/O);
- :mod:`.store` -- the emulated daemon, sans-IO: :class:`Store` and :class:`XsConnection`;
- :mod:`.server` -- :class:`XenstoreService`, the store on one UNIX socket per domain;
- :mod:`.client` -- :class:`XsClient`, a synchronous client for a socket or xenbus device.
"""

from __future__ import annotations

from .client import XenstoreError, XsClient
from .server import XenstoreService, socket_path
from .store import Quotas, Store, XsConnection, XsError
from .wire import Message, Perm, XsProtocolError, XsType

__all__ = [
    "Message",
    "Perm",
    "Quotas",
    "Store",
    "XenstoreError",
    "XenstoreService",
    "XsClient",
    "XsConnection",
    "XsError",
    "XsProtocolError",
    "XsType",
    "socket_path",
]
