"""A recording stand-in for Linux's Xen devices, at the file-descriptor level.

It plays what sits below ``XenBackend``'s :class:`~vchansim.backends.xen.Devices` seam on
a Xen host -- the gntalloc, gntdev and evtchn drivers with the hypervisor behind them, and
xenstored -- for several domains in one process, and records every call.  It decodes the
ioctl arguments with its own offsets, written from docs/protocol.md §6 (not from the backend's
``xen_abi``), so a packing mistake in the backend shows up here as a wrong field.

The pieces are real where that is possible: pages are ``memfd`` memory mapped with
``mmap``, so two backends really share them; event-channel files are ``eventfd``\\ s that
poll readable while a port is pending; XenStore is the project's emulated xenstored,
reached through a :class:`XenstoreRecorder`.  Kernel semantics kept: per-file mmap
offsets, grant checks at mmap time, unmap-notify when the last user of a page goes,
masked ports latch events, a closed port leaves its peer unbound.
"""

from __future__ import annotations

import errno
import mmap
import os
import socket
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xen_real.xsrecorder import XenstoreRecorder

from vchansim.xenstore.client import XsClient
from vchansim.xenstore.server import XenstoreService
from vchansim.xenstore.store import Xenstored

PAGE = 4096
DEV = "/dev/xen"
#: docs/protocol.md §6.1 -- (device, request number) -> name.
REQUESTS = {
    ("evtchn", 0x00084501): "BIND_INTERDOMAIN",
    ("evtchn", 0x00044502): "BIND_UNBOUND_PORT",
    ("evtchn", 0x00044503): "UNBIND",
    ("evtchn", 0x00044504): "NOTIFY",
    ("gntalloc", 0x00184705): "ALLOC_GREF",
    ("gntalloc", 0x00104706): "DEALLOC_GREF",
    ("gntalloc", 0x00104707): "SET_UNMAP_NOTIFY",
    ("gntdev", 0x00184700): "MAP_GRANT_REF",
    ("gntdev", 0x00104701): "UNMAP_GRANT_REF",
    ("gntdev", 0x00104707): "SET_UNMAP_NOTIFY",
}
CLEAR_BYTE, SEND_EVENT = 1, 2


def _kind(file: object) -> str:
    """The device a stand-in file object plays: evtchn, gntalloc or gntdev."""
    return type(file).__name__.strip("_").removesuffix("File").lower()


def _err(code: int, what: str) -> OSError:
    return OSError(code, f"{os.strerror(code)} ({what})")


@dataclass
class Call:
    """One recorded system call: which domain, which device, what, with which fields."""

    domid: int
    device: str
    op: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Pages:
    """Pages with users (allocation or reservation, and each mapping) and an unmap-notify."""

    memfd: int
    offset: int  # of the first page in memfd
    count: int
    users: int = 1
    notify: tuple[int, int, int] | None = None  # (byte offset in memfd, action, port)
    owner_domid: int = 0


@dataclass
class _Grant:
    granter: int
    grantee: int
    writable: bool
    memfd: int
    offset: int


@dataclass
class _Port:
    domid: int
    number: int
    file: _EvtchnFile
    remote_domid: int
    remote_port: int = 0


@dataclass
class _EvtchnFile:
    fd: int
    domid: int
    ports: set[int] = field(default_factory=set)
    queue: deque[int] = field(default_factory=deque)
    masked: set[int] = field(default_factory=set)
    latched: set[int] = field(default_factory=set)


@dataclass
class _GntallocFile:
    fd: int  # a memfd: the file's own offset space *is* the memory
    domid: int
    size: int = 0
    held: dict[int, tuple[_Pages, list[int]]] = field(default_factory=dict)  # index -> pages, refs


@dataclass
class _GntdevFile:
    fd: int
    domid: int
    next_index: int = 0
    reserved: dict[int, tuple[_Pages | None, list[tuple[int, int]], bool]] = field(
        default_factory=dict
    )  # index -> (pages once mmapped, [(domid, ref)], readonly)


class StandInXen:
    """One stand-in machine: hypervisor, drivers and xenstored for a few domains."""

    def __init__(self, workdir: Path, domains: tuple[int, ...] = (0, 1)) -> None:
        self.calls: list[Call] = []
        self.lock = threading.RLock()
        self.files: dict[int, Any] = {}
        self.grants: dict[tuple[int, int], _Grant] = {}
        self.ports: dict[tuple[int, int], _Port] = {}
        self.regions: dict[int, tuple[Any, _Pages, bool]] = {}  # id(mmap) -> (file, pages, ro)
        self.service = XenstoreService(Xenstored())
        self.recorders: dict[int, XenstoreRecorder] = {}
        for domid in domains:
            daemon = str(workdir / f"xsd{domid}")
            self.service.listen(domid, daemon)
            self.recorders[domid] = XenstoreRecorder(str(workdir / f"rec{domid}"), daemon)
        self._thread = threading.Thread(target=self.service.serve_forever, daemon=True)

    def __enter__(self) -> StandInXen:
        self._thread.start()
        for recorder in self.recorders.values():
            recorder.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for recorder in self.recorders.values():
            recorder.close()
        self.service.shutdown()
        self._thread.join(10)
        self.service.close()
        for fd in list(self.files):
            self._close(fd)

    def devices(self, domid: int, **options: Any) -> StandInDevices:
        return StandInDevices(self, domid, **options)

    def record(self, domid: int, device: str, op: str, /, **fields: Any) -> None:
        self.calls.append(Call(domid, device, op, fields))

    def ops(self, domid: int | None = None) -> list[str]:
        """``device:op`` of every recorded call (of one domain, if given)."""
        return [f"{c.device}:{c.op}" for c in self.calls if domid is None or c.domid == domid]

    # -- pages -----------------------------------------------------------------------
    def _drop_user(self, pages: _Pages) -> None:
        pages.users -= 1
        if pages.users or pages.notify is None:
            return
        offset, action, port = pages.notify
        pages.notify = None
        if action & CLEAR_BYTE:
            os.pwrite(pages.memfd, b"\0", offset)
        if action & SEND_EVENT:
            self._send(pages.owner_domid, port)

    # -- events ----------------------------------------------------------------------
    def _fire(self, evf: _EvtchnFile, port: int) -> None:
        if port in evf.masked:
            evf.latched.add(port)
            return
        evf.masked.add(port)
        if not evf.queue:
            os.eventfd_write(evf.fd, 1)
        evf.queue.append(port)

    def _send(self, domid: int, number: int) -> None:
        port = self.ports.get((domid, number))
        if port is None or not port.remote_port:
            return
        peer = self.ports.get((port.remote_domid, port.remote_port))
        if peer is not None:
            self._fire(peer.file, peer.number)

    def _new_port(self, domid: int, evf: _EvtchnFile, remote: int) -> _Port:
        number = 1
        while (domid, number) in self.ports:
            number += 1
        port = _Port(domid, number, evf, remote)
        self.ports[(domid, number)] = port
        evf.ports.add(number)
        return port

    def _unbind(self, evf: _EvtchnFile, number: int) -> None:
        port = self.ports.pop((evf.domid, number))
        evf.ports.discard(number)
        peer = self.ports.get((port.remote_domid, port.remote_port))
        if port.remote_port and peer is not None:
            peer.remote_port = 0

    def _close(self, fd: int) -> None:
        f = self.files.pop(fd)
        if isinstance(f, _EvtchnFile):
            for number in list(f.ports):
                self._unbind(f, number)
        elif isinstance(f, _GntallocFile):
            for pages, _refs in list(f.held.values()):
                self._drop_user(pages)
        else:
            for pages, _refs, _ro in f.reserved.values():
                if pages is not None:
                    self._drop_user(pages)
        os.close(fd)


class StandInDevices:
    """The Devices seam for one domain of a :class:`StandInXen`."""

    def __init__(
        self,
        xen: StandInXen,
        domid: int,
        *,
        missing: tuple[str, ...] = (),
        store_paths: tuple[str, ...] | None = None,
    ) -> None:
        self.xen = xen
        self.domid = domid
        self.missing = set(missing)
        # dom0 runs xenstored (socket); a guest has only the kernel's xenbus device.
        default = ("/var/run/xenstored/socket",) if domid == 0 else (f"{DEV}/xenbus",)
        self.store_paths = set(default if store_paths is None else store_paths)

    def exists(self, path: str) -> bool:
        known = {f"{DEV}/{name}" for name in ("evtchn", "gntalloc", "gntdev", "xenbus")}
        return path in known - self.missing

    def open(self, path: str, flags: int) -> int:
        device = path.removeprefix(f"{DEV}/")
        self.xen.record(self.domid, device, "open", flags=flags)
        if not self.exists(path):
            raise _err(errno.ENOENT, path)
        with self.xen.lock:
            if device == "evtchn":
                fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                self.xen.files[fd] = _EvtchnFile(fd, self.domid)
            elif device == "gntalloc":
                fd = os.memfd_create("gntalloc", os.MFD_CLOEXEC)
                self.xen.files[fd] = _GntallocFile(fd, self.domid)
            else:
                fd = os.memfd_create("gntdev", os.MFD_CLOEXEC)
                self.xen.files[fd] = _GntdevFile(fd, self.domid)
        return fd

    def close(self, fd: int) -> None:
        with self.xen.lock:
            self.xen.record(self.domid, self._device(fd), "close")
            self.xen._close(fd)

    def _device(self, fd: int) -> str:
        return _kind(self.xen.files[fd])

    # -- ioctl -------------------------------------------------------------------------
    def ioctl(self, fd: int, request: int, arg: bytearray) -> int:
        with self.xen.lock:
            device = self._device(fd)
            name = REQUESTS.get((device, request))
            if name is None:
                self.xen.record(self.domid, device, f"ioctl {request:#010x}")
                raise _err(errno.ENOTTY, f"{device} has no ioctl {request:#x}")
            size = (request >> 16) & 0x3FFF
            if len(arg) < size:
                raise _err(errno.EFAULT, f"{name} argument of {len(arg)} < {size} bytes")
            handler = getattr(self, f"_{device}_{name.lower()}")
            return handler(self.xen.files[fd], name, arg)

    def _evtchn_bind_unbound_port(self, f: _EvtchnFile, name: str, arg: bytearray) -> int:
        (remote,) = struct.unpack_from("<I", arg, 0)
        port = self.xen._new_port(self.domid, f, remote)
        self.xen.record(self.domid, "evtchn", name, remote_domain=remote, port=port.number)
        return port.number

    def _evtchn_bind_interdomain(self, f: _EvtchnFile, name: str, arg: bytearray) -> int:
        remote, remote_port = struct.unpack_from("<II", arg, 0)
        other = self.xen.ports.get((remote, remote_port))
        if other is None or other.remote_domid != self.domid or other.remote_port:
            raise _err(errno.EINVAL, f"domain {remote} port {remote_port} is not offered to us")
        port = self.xen._new_port(self.domid, f, remote)
        port.remote_port, other.remote_port = remote_port, port.number
        self.xen._fire(f, port.number)  # Xen marks a freshly bound interdomain port pending
        self.xen.record(
            self.domid,
            "evtchn",
            name,
            remote_domain=remote,
            remote_port=remote_port,
            port=port.number,
        )
        return port.number

    def _evtchn_notify(self, f: _EvtchnFile, name: str, arg: bytearray) -> int:
        (port,) = struct.unpack_from("<I", arg, 0)
        self.xen.record(self.domid, "evtchn", name, port=port)
        if port not in f.ports:
            raise _err(errno.ENOTCONN, f"port {port} is not bound on this file")
        self.xen._send(self.domid, port)
        return 0

    def _evtchn_unbind(self, f: _EvtchnFile, name: str, arg: bytearray) -> int:
        (port,) = struct.unpack_from("<I", arg, 0)
        self.xen.record(self.domid, "evtchn", name, port=port)
        if port not in f.ports:
            raise _err(errno.ENOTCONN, f"port {port} is not bound on this file")
        self.xen._unbind(f, port)
        return 0

    def _gntalloc_alloc_gref(self, f: _GntallocFile, name: str, arg: bytearray) -> int:
        domid, flags, count = struct.unpack_from("<HHI", arg, 0)
        if len(arg) < 16 + 4 * count:
            raise _err(errno.EFAULT, f"no room for {count} grant refs in {len(arg)} bytes")
        index = f.size
        f.size += count * PAGE
        os.ftruncate(f.fd, f.size)
        refs = []
        for page in range(count):
            ref = 1
            while (self.domid, ref) in self.xen.grants:
                ref += 1
            grant = _Grant(self.domid, domid, bool(flags & 1), f.fd, index + page * PAGE)
            self.xen.grants[(self.domid, ref)] = grant
            refs.append(ref)
        f.held[index] = (_Pages(f.fd, index, count, owner_domid=self.domid), refs)
        struct.pack_into("<Q", arg, 8, index)
        struct.pack_into(f"<{count}I", arg, 16, *refs)
        self.xen.record(
            self.domid,
            "gntalloc",
            name,
            domid=domid,
            flags=flags,
            count=count,
            index=index,
            refs=refs,
            arg_len=len(arg),
        )
        return 0

    def _gntalloc_dealloc_gref(self, f: _GntallocFile, name: str, arg: bytearray) -> int:
        index, count = struct.unpack_from("<QI", arg, 0)
        self.xen.record(self.domid, "gntalloc", name, index=index, count=count)
        held = f.held.pop(index, None)
        if held is None or held[0].count != count:
            raise _err(errno.ENOENT, f"no allocation of {count} pages at {index}")
        self.xen._drop_user(held[0])
        return 0

    def _gntalloc_set_unmap_notify(self, f: _GntallocFile, name: str, arg: bytearray) -> int:
        index, action, port = struct.unpack_from("<QII", arg, 0)
        self.xen.record(self.domid, "gntalloc", name, index=index, action=action, port=port)
        # gntalloc only looks in the file's list: after DEALLOC_GREF this is ENOENT.
        for start, (pages, _refs) in f.held.items():
            if start <= index < start + pages.count * PAGE:
                self._check_port(port, action)
                pages.notify = (index, action, port)
                return 0
        raise _err(errno.ENOENT, f"no allocation holds index {index}")

    def _gntdev_map_grant_ref(self, f: _GntdevFile, name: str, arg: bytearray) -> int:
        count, _pad = struct.unpack_from("<II", arg, 0)
        if len(arg) < 16 + 8 * count:
            raise _err(errno.EFAULT, f"no room for {count} refs in {len(arg)} bytes")
        refs = [struct.unpack_from("<II", arg, 16 + 8 * i) for i in range(count)]
        index = f.next_index
        f.next_index += count * PAGE
        f.reserved[index] = (None, refs, False)
        struct.pack_into("<Q", arg, 8, index)
        self.xen.record(
            self.domid, "gntdev", name, count=count, refs=refs, index=index, arg_len=len(arg)
        )
        return 0

    def _gntdev_unmap_grant_ref(self, f: _GntdevFile, name: str, arg: bytearray) -> int:
        index, count = struct.unpack_from("<QI", arg, 0)
        self.xen.record(self.domid, "gntdev", name, index=index, count=count)
        entry = f.reserved.pop(index, None)
        if entry is None or len(entry[1]) != count:
            raise _err(errno.EINVAL, f"no reservation of {count} pages at {index}")
        if entry[0] is not None:
            self.xen._drop_user(entry[0])
        return 0

    def _gntdev_set_unmap_notify(self, f: _GntdevFile, name: str, arg: bytearray) -> int:
        index, action, port = struct.unpack_from("<QII", arg, 0)
        self.xen.record(self.domid, "gntdev", name, index=index, action=action, port=port)
        for start, (pages, refs, readonly) in f.reserved.items():
            if start <= index < start + len(refs) * PAGE:
                if pages is None or (readonly and action & CLEAR_BYTE):
                    raise _err(errno.EINVAL, "notify on an unmapped or read-only reservation")
                self._check_port(port, action)
                pages.notify = (pages.offset + index - start, action, port)
                return 0
        raise _err(errno.ENOENT, f"no reservation holds index {index}")

    def _check_port(self, port: int, action: int) -> None:
        if action & SEND_EVENT and (self.domid, port) not in self.xen.ports:
            raise _err(errno.EINVAL, f"port {port} is not an evtchn-device port of ours")

    # -- memory ------------------------------------------------------------------------
    def mmap(self, fd: int, length: int, offset: int, *, writable: bool) -> mmap.mmap:
        with self.xen.lock:
            f = self.xen.files[fd]
            device = self._device(fd)
            self.xen.record(
                self.domid, device, "mmap", length=length, offset=offset, writable=writable
            )
            if isinstance(f, _GntallocFile):
                pages = f.held.get(offset, (None,))[0]
                if pages is None or pages.count * PAGE != length:
                    raise _err(errno.EINVAL, f"no allocation of {length} bytes at {offset}")
                memfd, start = f.fd, offset
            else:
                pages, memfd, start = self._map_foreign(f, length, offset, writable)
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            region = mmap.mmap(memfd, length, flags=mmap.MAP_SHARED, prot=prot, offset=start)
            pages.users += 1
            self.xen.regions[id(region)] = (f, pages, not writable)
            return region

    def _map_foreign(self, f: _GntdevFile, length: int, offset: int, writable: bool):
        entry = f.reserved.get(offset)
        if entry is None or len(entry[1]) * PAGE != length:
            raise _err(errno.EINVAL, f"no reservation of {length} bytes at {offset}")
        grants = []
        for granter, ref in entry[1]:
            grant = self.xen.grants.get((granter, ref))
            if grant is None or grant.grantee != self.domid:
                raise _err(errno.EINVAL, f"grant {ref} of domain {granter} is not ours to map")
            if writable and not grant.writable:
                raise _err(errno.EPERM, f"grant {ref} of domain {granter} is read-only")
            grants.append(grant)
        first = grants[0]
        if any(
            g.memfd != first.memfd or g.offset != first.offset + i * PAGE
            for i, g in enumerate(grants)
        ):
            raise _err(errno.EINVAL, "the stand-in maps only pages granted together")
        pages = _Pages(first.memfd, first.offset, len(grants), owner_domid=self.domid)
        f.reserved[offset] = (pages, entry[1], not writable)
        return pages, first.memfd, first.offset

    def munmap(self, region: mmap.mmap) -> None:
        with self.xen.lock:
            f, pages, _ro = self.xen.regions[id(region)]
            region.close()  # BufferError while views exist: then nothing changes
            del self.xen.regions[id(region)]
            self.xen.record(self.domid, _kind(f), "munmap", length=pages.count * PAGE)
            self.xen._drop_user(pages)

    # -- event files -----------------------------------------------------------------
    def read(self, fd: int, length: int) -> bytes:
        with self.xen.lock:
            f = self.xen.files[fd]
            self.xen.record(self.domid, "evtchn", "read", length=length)
            if not f.queue:
                raise _err(errno.EAGAIN, "no event pending")
            ports = [f.queue.popleft() for _ in range(min(length // 4, len(f.queue)))]
            if not f.queue:
                os.eventfd_read(fd)
            return struct.pack(f"<{len(ports)}I", *ports)

    def write(self, fd: int, data: bytes) -> int:
        with self.xen.lock:
            f = self.xen.files[fd]
            ports = struct.unpack(f"<{len(data) // 4}I", data)
            self.xen.record(self.domid, "evtchn", "write", ports=list(ports))
            for port in ports:
                if port in f.ports and port in f.masked:
                    f.masked.discard(port)
                    if port in f.latched:
                        f.latched.discard(port)
                        self.xen._fire(f, port)
            return len(data)

    # -- xenstore --------------------------------------------------------------------
    def connect_store(self, path: str) -> XsClient:
        self.xen.record(self.domid, "xenstore", "connect", path=path)
        if path not in self.store_paths:
            raise _err(errno.ENOENT, path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.xen.recorders[self.domid].listen_path)
        return XsClient(sock)
