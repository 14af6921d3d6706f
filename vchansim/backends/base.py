"""The backend interface: the three Xen services a vchan stands on.

A vchan needs memory one domain can grant to another (the grant table), a doorbell
between them (event channels) and a rendezvous (XenStore).  Each is a small protocol
below whose docstrings say what Xen guarantees, so a backend promises exactly that and
the channel code relies on nothing more.  A :class:`Backend` bundles one of each for one
domain, the way ocaml-vchan is parameterised by MEMORY, EVENTS and CONFIGURATION.

Handles are opened per channel, as libxenvchan opens its own gntalloc/gntdev and evtchn
file descriptors per vchan; closing a handle releases everything it holds.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar, runtime_checkable

from ..errors import ConfigError
from ..statspage import Blocked
from ..xen import check_domid
from ..xenstore.wire import Perm


@runtime_checkable
class Mapping(Protocol):
    """Pages shared with, or mapped from, another domain, seen as one contiguous buffer."""

    #: The pages, ``len(refs) * 4096`` bytes; read-only if mapped read-only.
    buf: memoryview
    #: Grant references of the pages, in buffer order.
    refs: tuple[int, ...]

    def close(self) -> None:
        """Unmap (and, for shared pages, revoke).  Fires a registered unmap-notify."""


class UnmapNotify(NamedTuple):
    """What :meth:`Grants.set_unmap_notify` sets: clear byte ``offset`` of the mapping and
    send an event on local ``port`` when the mapping goes away."""

    offset: int
    port: int


class DirectWait(NamedTuple):
    """What an endpoint needs to sleep on a port without the handle's help (see
    :meth:`Events.direct_wait`); the addresses stay valid until the handle is closed."""

    #: an epoll descriptor reporting the port's events, edge-triggered, as consume takes them
    epfd: int
    #: the eventfd a notify of the port writes to
    kick_fd: int
    #: the address of the port's wait word in its statistics page (0: none)
    wait_word: int
    #: the address of the counter of events this end sent (0: none)
    sent_counter: int


class Grants(Protocol):
    """A grant-table handle (Linux: one open ``gntalloc`` or ``gntdev`` file).

    Xen's rules: only the grantee domain may map a grant; a read-only grant cannot be
    mapped writable; an unknown or revoked reference fails; references are small non-zero
    integers, per granting domain.

    ``share`` and ``map`` take an optional ``notify``: the mapping's unmap-notify, set in
    the same call (libxengnttab's ``xengntshr_share_page_notify`` and
    ``xengnttab_map_grant_ref_notify``); if it is refused, nothing is shared or mapped.
    """

    def share(
        self, peer: int, count: int, *, writable: bool = True, notify: UnmapNotify | None = None
    ) -> Mapping:
        """Allocate ``count`` zeroed pages and grant them to domain ``peer``."""
        ...

    def map(
        self,
        peer: int,
        refs: Sequence[int],
        *,
        writable: bool = True,
        notify: UnmapNotify | None = None,
    ) -> Mapping:
        """Map the pages domain ``peer`` granted us under ``refs``, contiguously."""
        ...

    def set_unmap_notify(self, mapping: Mapping, offset: int, port: int) -> None:
        """When ``mapping`` goes away -- closed, or its process dies however it dies --
        clear byte ``offset`` of it and send an event on local ``port``."""
        ...

    def close(self) -> None:
        """Release the handle and every mapping still open through it."""
        ...


class Events(ABC):
    """An event-channel handle (Linux: one open ``/dev/xen/evtchn``).

    A port fires at most once until unmasked: :meth:`pending` returns it masked, and
    events arriving while masked stay pending and fire again on :meth:`unmask`.
    Notifications to a port whose peer is gone are dropped silently, as on Xen.

    A backend implements the abstract methods.  The optional abilities below them
    (:meth:`consume`, :meth:`waiting`) have defaults built on those, which a backend
    overrides when it can do better; the channel calls them unconditionally, so a
    wrapper around a handle (the scenario harness's tap) must forward them too.
    """

    @abstractmethod
    def bind_unbound(self, remote: int) -> int:
        """Allocate a port that domain ``remote`` may bind to; return the local port."""

    @abstractmethod
    def bind_interdomain(self, remote: int, remote_port: int) -> int:
        """Connect to ``remote``'s unbound port ``remote_port``; return the local port.

        The new port starts pending, as on Xen: events sent to the unbound end were
        dropped, so the first :meth:`pending` returns it at once.
        """

    @abstractmethod
    def notify(self, port: int) -> None:
        """Send an event to the other end of local ``port``."""

    @abstractmethod
    def pending(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` seconds (None: forever) for a port to fire.

        Returns the port, now masked, or None if nothing fired in time.
        """

    @abstractmethod
    def unmask(self, port: int) -> None:
        """Re-enable ``port`` after :meth:`pending` returned it."""

    @abstractmethod
    def unbind(self, port: int) -> None:
        """Close ``port``; its interdomain peer returns to "unbound, waiting for us"."""

    @abstractmethod
    def fileno(self) -> int:
        """A file descriptor that polls readable while a port is pending."""

    @abstractmethod
    def close(self) -> None:
        """Unbind every port and release the handle."""

    # -- optional abilities: defaults that any handle can do, overridden where cheaper --

    def consume(self, timeout: float | None = None) -> int | None:
        """Wait like :meth:`pending`, then leave the port armed: one event taken.

        Default: :meth:`pending`, then :meth:`unmask` of the port it returned.  A backend
        that can take an event without masking and unmasking (the shm one: one
        ``epoll_wait``) overrides it; the channel wakes only through this.
        """
        port = self.pending(timeout)
        if port is not None:
            self.unmask(port)
        return port

    def waiting(self, port: int, blocked: Blocked) -> None:
        """This end is now asleep on ``port`` in ``blocked`` (``Blocked.NONE``: awake).

        Default: nothing.  A backend that keeps a statistics page for observers writes
        it there; the channel calls it around every wait that may sleep.
        """
        return None

    def direct_wait(self, port: int) -> DirectWait | None:
        """The descriptors and addresses with which the core may notify and sleep on
        ``port`` itself, bypassing :meth:`notify`, :meth:`consume` and :meth:`waiting`.

        Default: None, and the channel goes through those.  A backend whose events are
        plain descriptors (the shm one) gives them, so that a blocking read or write --
        arm, re-check, sleep, look again after a wake-up, kick -- is one call into the
        core; a wrapper that must see every event (the harness's tap) keeps the default.
        """
        return None


class StorePipeline(Protocol):
    """XenStore requests queued to go out together.  Each method queues one and returns
    the pipeline; :meth:`execute` sends them all."""

    def read(self, path: str, tx: int = 0) -> StorePipeline: ...

    def write(self, path: str, value: bytes, tx: int = 0) -> StorePipeline: ...

    def set_perms(self, path: str, perms: Sequence[Perm], tx: int = 0) -> StorePipeline: ...

    def transaction_start(self) -> StorePipeline: ...

    def execute(self) -> list[Any]:
        """Each request's result, in order: a read's bytes, a started transaction's id,
        None for the others.  The first failure raises (StoreError, its ``filename``
        naming the node) once all are answered; the others took effect."""
        ...

    def submit(self) -> StoreReplies:
        """Send the requests now and read their replies later, so that the round trip
        overlaps other work; :meth:`execute` is ``submit().results()``."""
        ...


class StoreReplies(Protocol):
    """The replies of a submitted pipeline."""

    def results(self) -> list[Any]:
        """As :meth:`StorePipeline.execute` returns them (reading them if need be)."""
        ...


class Store(Protocol):
    """A XenStore connection, as libxenstore's ``xs_open`` gives one.

    Paths not starting with ``/`` are relative to the domain's home,
    ``/local/domain/<domid>``.  ``tx`` 0 means outside any transaction.  Failures raise
    :class:`~vchansim.errors.StoreError` carrying xenstored's errno.
    """

    def read(self, path: str, tx: int = 0) -> bytes: ...

    def write(self, path: str, value: bytes, tx: int = 0) -> None: ...

    def mkdir(self, path: str, tx: int = 0) -> None: ...

    def rm(self, path: str, tx: int = 0) -> None: ...

    def directory(self, path: str, tx: int = 0) -> list[str]: ...

    def get_perms(self, path: str, tx: int = 0) -> list[Perm]: ...

    def set_perms(self, path: str, perms: Sequence[Perm], tx: int = 0) -> None: ...

    def transaction_start(self) -> int: ...

    def transaction_end(self, tx: int, commit: bool = True) -> None:
        """Commit (or abort) ``tx``; a conflicting commit raises StoreError(EAGAIN)."""
        ...

    def pipeline(self) -> StorePipeline:
        """Queue requests to send together, one round trip for all."""
        ...

    def watch(self, path: str, token: str) -> None: ...

    def unwatch(self, path: str, token: str) -> None: ...

    def read_watch(self, timeout: float | None = None) -> tuple[str, str] | None:
        """Next (path, token) watch event, or None if none arrived within ``timeout``."""
        ...

    def close(self) -> None: ...


class Backend(ABC):
    """One domain's view of the three services.  Chosen by name through the registry.

    Subclasses set ``name`` and implement the three factories; each call opens a new
    handle that the caller owns and closes.
    """

    name: ClassVar[str]

    def __init__(self, domid: int | None = None) -> None:
        self.domid = check_domid(domid if domid is not None else default_domid())

    @abstractmethod
    def grants(self) -> Grants:
        """Open a grant-table handle."""

    @abstractmethod
    def events(self) -> Events:
        """Open an event-channel handle."""

    @abstractmethod
    def store(self) -> Store:
        """Open a XenStore connection."""

    #: False where the platform cannot map a domain's own grants (Linux on Xen).
    supports_loopback: ClassVar[bool] = True
    #: True where a backend plays whichever domain it is given (the emulators); False
    #: where it is the domain its process runs in (real Xen), so one process has one.
    plays_domains: ClassVar[bool] = True

    def close(self) -> None:  # noqa: B027 - most backends hold nothing between handles
        """Release whatever the backend keeps between handles."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} domid={self.domid}>"


_M = TypeVar("_M", bound=Mapping)


def with_unmap_notify(grants: Grants, mapping: _M, notify: UnmapNotify | None) -> _M:
    """``mapping`` with ``notify`` set on it, if given: ``share`` and ``map`` of backends
    that set it with a call of its own.  If that call fails, the mapping is closed, so
    that the failed share or map leaves nothing behind."""
    if notify is not None:
        try:
            grants.set_unmap_notify(mapping, notify.offset, notify.port)
        except BaseException:
            mapping.close()
            raise
    return mapping


_T = TypeVar("_T")


def retry_while_watched(
    store: Store,
    attempt: Callable[[], _T],
    retry: tuple[type[Exception], ...],
    deadline: float,
    on_event: Callable[[tuple[str, str] | None], object] | None = None,
) -> _T:
    """``attempt()``'s result, trying again after each event of a watch the caller set
    on ``store`` (never a poll: a change of what it watches is the only reason to look
    again); once ``time.monotonic()`` passes ``deadline``, the last ``retry`` failure
    raises.  ``on_event`` sees each event read (None: none came before the deadline), so
    a caller can say what its wait saw when it fails.  The watch stays the caller's to
    remove."""
    while True:
        try:
            return attempt()
        except retry:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            event = store.read_watch(left)
            if on_event is not None:
                on_event(event)


def default_domid() -> int:
    """The domain this process plays: ``$VCHANSIM_DOMID``, else 0 (privileged dom0)."""
    raw = os.environ.get("VCHANSIM_DOMID", "0")
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"VCHANSIM_DOMID={raw!r} is not an integer domain id") from None
    return check_domid(value, "VCHANSIM_DOMID")
