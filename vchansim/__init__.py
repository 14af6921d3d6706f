"""vchansim: Xen's vchan (libxenvchan) without a hypervisor.

The ring protocol is libxenvchan's, byte for byte; the grant tables, event channels and
XenStore under it come from a pluggable backend (``shm`` between local processes, ``xen``
on a real hypervisor, ``memory`` inside one process).
"""

from .backends import available_backends, get_backend
from .channel import Vchan
from .errors import (
    BackendError,
    ChannelClosed,
    ConfigError,
    EventChannelError,
    GrantError,
    MessageTooLarge,
    ProtocolError,
    StoreError,
    VchanError,
)

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "ChannelClosed",
    "ConfigError",
    "EventChannelError",
    "GrantError",
    "MessageTooLarge",
    "ProtocolError",
    "StoreError",
    "Vchan",
    "VchanError",
    "available_backends",
    "get_backend",
]
