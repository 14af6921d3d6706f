"""The ``xen`` backend: the same vchan code on a real hypervisor, through Linux's devices.

It does what libxenvchan's helper libraries do, with plain ``ioctl`` and ``mmap`` and no
C library: grants through ``/dev/xen/gntalloc`` (share) and ``/dev/xen/gntdev`` (map),
events through ``/dev/xen/evtchn``, XenStore through xenstored's UNIX socket or
``/dev/xen/xenbus``, chosen as libxenstore's ``xs_open`` chooses (docs/protocol.md §5-§6).
Numbers and layouts live in :mod:`.xen_abi`.

Every system call goes through a :class:`Devices` object -- :class:`LinuxDevices` by
default.  That is the backend's one seam: the tests hand it a recording stand-in with the
same methods to check argument packing, offsets and call order on machines without Xen.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import select
import struct
import time
from collections.abc import Mapping as EnvMapping
from collections.abc import Sequence
from typing import Protocol

from ..errors import BackendError, ConfigError, GrantError, StoreError
from ..layout import PAGE_SIZE
from ..xen import check_domid
from ..xenstore.client import XsClient
from . import xen_abi as abi
from .base import Backend, Events, Mapping, UnmapNotify, with_unmap_notify

_OPEN_FLAGS = os.O_RDWR | os.O_CLOEXEC
_PORT = struct.Struct("<I")
#: gntdev's mmap answers EAGAIN while a granted page is paged out; libxengnttab waits 1 ms
#: and tries again.  We do the same, for at most this long.
_MMAP_EAGAIN_WINDOW = 1.0

#: A mapping of a device's pages (a name of its own: :class:`Devices` has a method ``mmap``).
Region = mmap.mmap

_DRIVERS = {abi.EVTCHN: "xen-evtchn", abi.GNTALLOC: "xen-gntalloc", abi.GNTDEV: "xen-gntdev"}


class Devices(Protocol):
    """The system calls the backend makes on Xen's devices and XenStore."""

    def exists(self, path: str) -> bool: ...

    def open(self, path: str, flags: int) -> int: ...

    def close(self, fd: int) -> None: ...

    def ioctl(self, fd: int, request: int, arg: bytearray) -> int:
        """Issue ``request`` with ``arg`` passed by reference; return the call's result."""
        ...

    def mmap(self, fd: int, length: int, offset: int, *, writable: bool) -> Region:
        """A MAP_SHARED mapping of ``length`` bytes at file ``offset`` (read-only unless
        ``writable``)."""
        ...

    def munmap(self, region: Region) -> None: ...

    def read(self, fd: int, length: int) -> bytes: ...

    def write(self, fd: int, data: bytes) -> int: ...

    def connect_store(self, path: str) -> XsClient:
        """Open XenStore at ``path`` (socket or device); OSError if it is not there."""
        ...


class LinuxDevices:
    """The real thing: os, fcntl and mmap on ``/dev/xen/*``."""

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def open(self, path: str, flags: int) -> int:
        return os.open(path, flags)

    def close(self, fd: int) -> None:
        os.close(fd)

    def ioctl(self, fd: int, request: int, arg: bytearray) -> int:
        return int(fcntl.ioctl(fd, request, arg, True))

    def mmap(self, fd: int, length: int, offset: int, *, writable: bool) -> Region:
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        return mmap.mmap(fd, length, flags=mmap.MAP_SHARED, prot=prot, offset=offset)

    def munmap(self, region: Region) -> None:
        region.close()

    def read(self, fd: int, length: int) -> bytes:
        return os.read(fd, length)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def connect_store(self, path: str) -> XsClient:
        return XsClient.connect(path)


def _failed(what: str, exc: OSError, kind: type[BackendError] = BackendError) -> BackendError:
    reason = exc.strerror or str(exc)
    return kind(f"{what} failed: {reason}", err=exc.errno)


class XenMapping:
    """Pages shared through gntalloc or mapped through gntdev, as one buffer.

    Closing releases our view of the pages before the munmap (an exported buffer cannot be
    unmapped); anything else still pointing into them -- memoryview slices, ctypes
    objects -- must have been released by then, or close raises GrantError and can be
    retried once they are.
    """

    def __init__(
        self,
        grants: XenGrants,
        region: mmap.mmap,
        refs: Sequence[int],
        index: int,
        *,
        shared: bool,
    ) -> None:
        self.buf = memoryview(region)
        self.refs = tuple(refs)
        self.index = index
        self.shared = shared
        self._grants = grants
        self._region: mmap.mmap | None = region
        #: gntalloc only: our allocation reference not yet dropped (see XenGrants.share).
        self._allocated = shared

    @property
    def closed(self) -> bool:
        return self._region is None

    def close(self) -> None:
        if self._region is None:
            return
        try:
            self.buf.release()
            self._grants.devices.munmap(self._region)
        except BufferError as exc:
            raise GrantError(
                f"cannot unmap grants {list(self.refs)}: a view of the pages is still in use "
                "(release memoryviews and ctypes objects into the mapping first)",
                err=errno.EBUSY,
            ) from exc
        self._region = None
        self._grants._after_unmap(self)


class XenGrants:
    """One grant handle: a gntalloc fd for sharing and a gntdev fd for mapping, each opened
    the first time it is needed (a server never opens gntdev, a client never gntalloc,
    just as with libxenvchan)."""

    def __init__(self, devices: Devices) -> None:
        self.devices = devices
        self._fds: dict[str, int] = {}
        self._open: list[XenMapping] = []
        self._closed = False

    def _fd(self, path: str) -> int:
        if self._closed:
            raise GrantError("the grant handle is closed", err=errno.EBADF)
        if path not in self._fds:
            try:
                self._fds[path] = self.devices.open(path, _OPEN_FLAGS)
            except OSError as exc:
                raise _failed(f"opening {path}", exc, GrantError) from exc
        return self._fds[path]

    def _ioctl(self, path: str, request: int, arg: bytearray, what: str) -> int:
        try:
            return self.devices.ioctl(self._fd(path), request, arg)
        except OSError as exc:
            raise _failed(what, exc, GrantError) from exc

    # -- sharing (gntalloc) ---------------------------------------------------------------
    def share(
        self, peer: int, count: int, *, writable: bool = True, notify: UnmapNotify | None = None
    ) -> XenMapping:
        """ALLOC_GREF ``count`` pages for ``peer`` and mmap them at the returned index.

        libxenvchan drops its allocation reference (DEALLOC_GREF) right after mapping --
        after SET_UNMAP_NOTIFY for the control page, which gntalloc only accepts while the
        allocation is held.  Here sharing and the notify are two calls, so the DEALLOC
        follows the notify in :meth:`set_unmap_notify`, or the munmap for pages that never
        get one.  The kernel frees the pages at the same moment either way: when neither
        the allocation nor a mapping holds them.
        """
        check_domid(peer, "peer domain id")
        if not 1 <= count <= abi.MAX_PAGES_PER_CALL:
            raise ConfigError(f"cannot share {count} pages at once (1..{abi.MAX_PAGES_PER_CALL})")
        layout = abi.GNTALLOC_ALLOC_GREF
        flags = abi.GNTALLOC_FLAG_WRITABLE if writable else 0
        arg = layout.pack(peer, flags, count, 0, extra=4 * count)
        self._ioctl(
            abi.GNTALLOC,
            abi.IOCTL_GNTALLOC_ALLOC_GREF,
            arg,
            f"gntalloc ALLOC_GREF of {count} pages for domain {peer}",
        )
        index = layout.unpack(arg)[3]
        refs = struct.unpack_from(f"<{count}I", arg, layout.offsets["gref_ids"])
        try:
            region = self.devices.mmap(
                self._fd(abi.GNTALLOC), count * PAGE_SIZE, index, writable=True
            )
        except OSError as exc:
            self._dealloc(index, count)
            raise _failed(f"mmap of shared grants {list(refs)}", exc, GrantError) from exc
        mapping = XenMapping(self, region, refs, index, shared=True)
        self._open.append(mapping)
        return with_unmap_notify(self, mapping, notify)

    def _dealloc(self, index: int, count: int) -> None:
        self._ioctl(
            abi.GNTALLOC,
            abi.IOCTL_GNTALLOC_DEALLOC_GREF,
            abi.GNTALLOC_DEALLOC_GREF.pack(index, count),
            f"gntalloc DEALLOC_GREF of {count} pages at index {index}",
        )

    # -- mapping (gntdev) -----------------------------------------------------------------
    def map(
        self,
        peer: int,
        refs: Sequence[int],
        *,
        writable: bool = True,
        notify: UnmapNotify | None = None,
    ) -> XenMapping:
        """MAP_GRANT_REF the refs, then mmap at the returned index (read-only with
        PROT_READ alone: gntdev decides the grant mapping's mode at the first mmap)."""
        check_domid(peer, "peer domain id")
        count = len(refs)
        if not 1 <= count <= abi.MAX_PAGES_PER_CALL:
            raise ConfigError(f"cannot map {count} grants at once (1..{abi.MAX_PAGES_PER_CALL})")
        layout = abi.GNTDEV_MAP_GRANT_REF
        arg = layout.pack(count, 0, 0, extra=abi.GNTDEV_GRANT_REF.size * count)
        entry = abi.GNTDEV_GRANT_REF
        for i, ref in enumerate(refs):
            entry.packer.pack_into(arg, layout.offsets["refs"] + entry.size * i, peer, ref)
        self._ioctl(
            abi.GNTDEV,
            abi.IOCTL_GNTDEV_MAP_GRANT_REF,
            arg,
            f"gntdev MAP_GRANT_REF of domain {peer}'s grants {list(refs)}",
        )
        index = layout.unpack(arg)[2]
        try:
            region = self._mmap_foreign(count * PAGE_SIZE, index, writable)
        except OSError as exc:
            self._unmap_grant_ref(index, count)
            mode = "read-write" if writable else "read-only"
            what = f"{mode} mmap of domain {peer}'s grants {list(refs)}"
            raise _failed(what, exc, GrantError) from exc
        mapping = XenMapping(self, region, refs, index, shared=False)
        self._open.append(mapping)
        return with_unmap_notify(self, mapping, notify)

    def _mmap_foreign(self, length: int, index: int, writable: bool) -> mmap.mmap:
        deadline = time.monotonic() + _MMAP_EAGAIN_WINDOW
        while True:
            try:
                return self.devices.mmap(self._fd(abi.GNTDEV), length, index, writable=writable)
            except OSError as exc:
                if exc.errno != errno.EAGAIN or time.monotonic() > deadline:
                    raise
            time.sleep(0.001)

    def _unmap_grant_ref(self, index: int, count: int) -> None:
        self._ioctl(
            abi.GNTDEV,
            abi.IOCTL_GNTDEV_UNMAP_GRANT_REF,
            abi.GNTDEV_UNMAP_GRANT_REF.pack(index, count, 0),
            f"gntdev UNMAP_GRANT_REF of {count} pages at index {index}",
        )

    # -- both ------------------------------------------------------------------------------
    def set_unmap_notify(self, mapping: Mapping, offset: int, port: int) -> None:
        """SET_UNMAP_NOTIFY(index + offset, CLEAR_BYTE | SEND_EVENT, port) on the device the
        mapping came from.  ``port`` must be bound through /dev/xen/evtchn already."""
        if not isinstance(mapping, XenMapping) or mapping._grants is not self:
            raise ConfigError("set_unmap_notify needs a mapping made by this grant handle")
        if mapping.closed:
            raise ConfigError("set_unmap_notify on a closed mapping")
        if not 0 <= offset < mapping.buf.nbytes:
            raise ConfigError(f"unmap-notify offset {offset} is outside the mapping")
        if mapping.buf.readonly:
            raise GrantError(
                "unmap-notify cannot clear a byte of a read-only mapping", err=errno.EINVAL
            )
        action = abi.UNMAP_NOTIFY_CLEAR_BYTE | abi.UNMAP_NOTIFY_SEND_EVENT
        if mapping.shared:
            path, request = abi.GNTALLOC, abi.IOCTL_GNTALLOC_SET_UNMAP_NOTIFY
            arg = abi.GNTALLOC_UNMAP_NOTIFY.pack(mapping.index + offset, action, port)
        else:
            path, request = abi.GNTDEV, abi.IOCTL_GNTDEV_SET_UNMAP_NOTIFY
            arg = abi.GNTDEV_UNMAP_NOTIFY.pack(mapping.index + offset, action, port)
        self._ioctl(path, request, arg, f"SET_UNMAP_NOTIFY at byte {offset} with port {port}")
        if mapping._allocated:
            mapping._allocated = False
            self._dealloc(mapping.index, len(mapping.refs))

    def _after_unmap(self, mapping: XenMapping) -> None:
        """The munmap is done: drop the allocation (gntalloc) or the reservation (gntdev).
        After the handle closed, closing its device files already dropped both."""
        if mapping in self._open:
            self._open.remove(mapping)
        if self._closed:
            return
        if not mapping.shared:
            self._unmap_grant_ref(mapping.index, len(mapping.refs))
        elif mapping._allocated:
            mapping._allocated = False
            self._dealloc(mapping.index, len(mapping.refs))

    def close(self) -> None:
        """Unmap whatever is still mapped, then close the device files."""
        first_error: BaseException | None = None
        for mapping in list(self._open):
            try:
                mapping.close()
            except BackendError as exc:
                first_error = first_error or exc
        self._closed = True
        for fd in self._fds.values():
            self.devices.close(fd)
        self._fds.clear()
        if first_error is not None:
            raise first_error


class XenEvents(Events):
    """One open ``/dev/xen/evtchn``: its ports, its pending queue, its poll-able fd."""

    def __init__(self, devices: Devices) -> None:
        self._devices = devices
        try:
            self._fd = devices.open(abi.EVTCHN, _OPEN_FLAGS)
        except OSError as exc:
            raise _failed(f"opening {abi.EVTCHN}", exc) from exc
        self._ports: set[int] = set()

    def _ioctl(self, request: int, arg: bytearray, what: str) -> int:
        try:
            return self._devices.ioctl(self._fd, request, arg)
        except OSError as exc:
            raise _failed(what, exc) from exc

    def _bound(self, port: int) -> int:
        """A new port starts enabled; libxenvchan still unmasks it once, and so do we."""
        self._ports.add(port)
        self.unmask(port)
        return port

    def bind_unbound(self, remote: int) -> int:
        check_domid(remote, "remote domain id")
        arg = abi.EVTCHN_BIND_UNBOUND_PORT.pack(remote)
        what = f"evtchn BIND_UNBOUND_PORT for domain {remote}"
        return self._bound(self._ioctl(abi.IOCTL_EVTCHN_BIND_UNBOUND_PORT, arg, what))

    def bind_interdomain(self, remote: int, remote_port: int) -> int:
        check_domid(remote, "remote domain id")
        arg = abi.EVTCHN_BIND_INTERDOMAIN.pack(remote, remote_port)
        what = f"evtchn BIND_INTERDOMAIN to domain {remote} port {remote_port}"
        return self._bound(self._ioctl(abi.IOCTL_EVTCHN_BIND_INTERDOMAIN, arg, what))

    def notify(self, port: int) -> None:
        arg = abi.EVTCHN_NOTIFY.pack(port)
        self._ioctl(abi.IOCTL_EVTCHN_NOTIFY, arg, f"evtchn NOTIFY on port {port}")

    def pending(self, timeout: float | None = None) -> int | None:
        """poll() for the timeout, then read one pending port (the kernel has masked it)."""
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        ms = -1 if timeout is None else max(0, round(timeout * 1000))
        if not poller.poll(ms):
            return None
        try:
            data = self._devices.read(self._fd, _PORT.size)
        except OSError as exc:  # EFBIG: the kernel's pending ring overflowed
            raise _failed("reading a pending event from /dev/xen/evtchn", exc) from exc
        return int(_PORT.unpack(data)[0])

    def unmask(self, port: int) -> None:
        try:
            self._devices.write(self._fd, _PORT.pack(port))
        except OSError as exc:
            raise _failed(f"unmasking port {port}", exc) from exc

    def unbind(self, port: int) -> None:
        self._ioctl(abi.IOCTL_EVTCHN_UNBIND, abi.EVTCHN_UNBIND.pack(port), f"unbinding {port}")
        self._ports.discard(port)

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        """Closing the device unbinds every port (the peers' ends return to unbound)."""
        if self._fd >= 0:
            self._devices.close(self._fd)
            self._fd = -1
            self._ports.clear()


def xenstore_paths(environ: EnvMapping[str, str], devices: Devices) -> tuple[str, str]:
    """The two places libxenstore's ``xs_open(0)`` tries, in order (docs/protocol.md §6.5):
    the daemon's socket, then the kernel's xenbus device."""
    override = environ.get("XENSTORED_PATH")
    rundir = environ.get("XENSTORED_RUNDIR") or abi.XENSTORED_RUNDIR
    daemon = override or os.path.join(rundir, "socket")
    kernel = override or (abi.XENBUS if devices.exists(abi.XENBUS) else abi.PROC_XENBUS)
    return daemon, kernel


def open_store(devices: Devices, environ: EnvMapping[str, str] | None = None) -> XsClient:
    """A XenStore connection the way ``xs_open(0)`` makes one."""
    daemon, kernel = xenstore_paths(os.environ if environ is None else environ, devices)
    try:
        return devices.connect_store(daemon)
    except OSError as first:
        try:
            return devices.connect_store(kernel)
        except OSError as second:
            raise BackendError(
                f"cannot reach XenStore: {daemon}: {first.strerror or first}; "
                f"{kernel}: {second.strerror or second}",
                err=second.errno,
            ) from second


def _whole_number(raw: bytes) -> int | None:
    """``raw`` as a whole decimal number, or None (no C-style leniency: the domid key)."""
    text = raw.decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() else None


class XenBackend(Backend):
    """This domain on the real hypervisor, whose id XenStore's ``domid`` key gives.

    On real Xen the domain is a fact, not a choice: a ``domid`` is checked against it and
    refused if it differs, since a channel set up under another domain's id would publish
    under that domain's home and wait for a peer that never looks there.
    """

    name = "xen"
    #: Linux cannot map a domain's own grants reliably (gntdev on a gntalloc page of the
    #: same domain: "Bad page map" reports; Qubes refuses it), so loopback is unsupported.
    supports_loopback = False
    plays_domains = False

    def __init__(self, domid: int | None = None, *, devices: Devices | None = None) -> None:
        self.devices: Devices = devices if devices is not None else LinuxDevices()
        _require_devices(self.devices)
        own = self._own_domid()
        if domid is not None and domid != own:
            check_domid(domid)
            raise ConfigError(
                f"the xen backend runs in domain {own}; it cannot act as domain {domid} "
                "(on real Xen a process is the domain it runs in)"
            )
        super().__init__(own)

    def _own_domid(self) -> int:
        try:
            with self.store() as store:
                raw = store.read("domid")
        except StoreError as exc:
            raise BackendError(
                f"cannot learn this domain's id from XenStore key 'domid' ({exc})",
                err=exc.errno,
            ) from exc
        domid = _whole_number(raw)
        if domid is None:
            raise BackendError(f"XenStore's domid key holds {raw!r}, not a domain id")
        return check_domid(domid, "XenStore domid")

    def grants(self) -> XenGrants:
        return XenGrants(self.devices)

    def events(self) -> XenEvents:
        return XenEvents(self.devices)

    def store(self) -> XsClient:
        return open_store(self.devices)


def _require_devices(devices: Devices) -> None:
    for path, driver in _DRIVERS.items():
        if not devices.exists(path):
            raise BackendError(
                f"the xen backend needs {path}, which is missing: this is not a Xen domain, "
                f"or the {driver} driver is not loaded (modprobe {driver}).  Without a "
                "hypervisor use the 'shm' backend, which emulates Xen.",
                err=errno.ENODEV,
            )
