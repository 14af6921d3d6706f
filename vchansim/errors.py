"""Exceptions raised by vchansim.

libxenvchan reports every failure as ``-1`` (or ``NULL``) and leaves the caller to guess
why; vchansim raises one of these instead, each naming the cause.  They all derive from
:class:`VchanError`, itself an :class:`OSError`, so code that already catches ``OSError``
around socket-like I/O keeps working.
"""

from __future__ import annotations

import errno


class VchanError(OSError):
    """Base class of every error vchansim raises on purpose."""

    default_errno = errno.EIO

    def __init__(self, message: str, *, err: int | None = None) -> None:
        super().__init__(err if err is not None else self.default_errno, message)

    def __str__(self) -> str:
        return str(self.strerror)


class ChannelClosed(VchanError):
    """The peer closed the channel (or died) and the operation cannot complete.

    ``written`` says how many bytes of a blocking ``write`` went into the ring before the
    close was seen: the C library forgets this; vchansim reports it.
    """

    default_errno = errno.EPIPE

    def __init__(self, message: str = "the peer closed the vchan", *, written: int = 0) -> None:
        super().__init__(message)
        self.written = written


class MessageTooLarge(VchanError):
    """A packet ``send``/``recv`` asked for more bytes than the ring can ever hold."""

    default_errno = errno.EMSGSIZE


class EventChannelError(VchanError):
    """The event channel failed (notify, wait).  ``transferred`` bytes were committed."""

    def __init__(self, message: str, *, transferred: int = 0, err: int | None = None) -> None:
        super().__init__(message, err=err)
        self.transferred = transferred


class ProtocolError(VchanError):
    """The shared page or the peer's published data violate the vchan protocol."""

    default_errno = errno.EPROTO


class ConfigError(VchanError, ValueError):
    """A caller-supplied value (size, domain id, path, option) is out of range."""

    default_errno = errno.EINVAL


class BackendError(VchanError):
    """A backend service (grants, events, store, hub, device) refused or failed."""


class GrantError(BackendError):
    """A grant could not be shared or mapped (Xen's rules refuse it, or the table is full)."""

    default_errno = errno.EPERM


class StoreError(BackendError):
    """XenStore answered an error (its errno name is in ``errno``)."""

    default_errno = errno.ENOENT


class StaleServerError(BackendError):
    """A server's keys are in XenStore, but the event channel or grant they name cannot be
    used: the server died (it leaves its keys behind, as on Xen) or another client took
    it.  ``Vchan.client(wait=...)`` treats it as a server not there yet."""

    default_errno = errno.ENOENT
