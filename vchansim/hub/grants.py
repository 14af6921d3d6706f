"""The hub's grant table: Xen's rules (:mod:`vchansim.xenmodel.grants`) over shared
memory objects.

Each SHARE creates one POSIX shm object, unlinked at once, so the pages live exactly as
long as some descriptor or mapping holds them and nothing is left in ``/dev/shm`` however
processes die.  The hub keeps a read-write and a read-only descriptor of every object:
a read-only MAP gets the latter, so the mapper's kernel, not its good manners, keeps it
from writing.

A *handle* is what one SHARE or MAP gave a connection.  Releasing it (GNT_UNMAP, or the
connection going away) fires its unmap-notify -- clear a byte, ring a doorbell -- which
is how a peer learns that a process died.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Callable

from ..layout import PAGE_SIZE
from ..xen import RequestError
from ..xenmodel import grants as model
from ..xenmodel.grants import GRANTS_PER_DOMAIN
from .events import PinnedBell, Port

#: Names of the hub's shm objects start with this; the leak checker looks for it.
SHM_PREFIX = "/vchansim-"

_names = itertools.count(1)


def _create_shm(size: int) -> int:
    """A fresh shm object of ``size`` zero bytes, already unlinked; returns its fd.

    The pages are reserved now (``posix_fallocate``), not on first touch: a full
    ``/dev/shm`` must be an ENOSPC answer to SHARE naming the cause, not a SIGBUS in
    whichever endpoint first writes to a page the kernel cannot supply.
    """
    # Imported here, by the hub alone: the leak checks import this module's names, and
    # an endpoint on real Xen (in a guest without posix_ipc) imports the leak checks.
    import posix_ipc

    while True:
        name = f"{SHM_PREFIX}{os.getpid()}-{next(_names)}"
        try:
            shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600)
        except posix_ipc.ExistentialError:
            continue  # left behind by a hub that died mid-create and had our pid
        shm.unlink()
        break
    try:
        os.posix_fallocate(shm.fd, 0, size)
    except OSError as exc:
        os.close(shm.fd)
        raise RequestError(
            exc.errno or errno.ENOSPC,
            f"cannot reserve {size} bytes of shared memory in /dev/shm: {exc.strerror or exc}",
        ) from exc
    return int(shm.fd)


def _attempt(failures: list[str], what: str, action: Callable[..., object], *args: object) -> bool:
    """Run one cleanup step; on OSError note ``what`` failed and go on.  True if it ran."""
    try:
        action(*args)
    except OSError as exc:
        failures.append(f"{what} failed: {exc.strerror or exc}")
        return False
    return True


class SharedObject:
    """One run of shared pages, reference-counted by the handles that use it."""

    def __init__(self, pages: int) -> None:
        self.pages = pages
        self.fd = _create_shm(pages * PAGE_SIZE)
        self._ro_fd: int | None = None
        self._refs = 1

    @property
    def ro_fd(self) -> int:
        """A read-only descriptor of the pages, opened on first use (read-only maps and
        observers): reopening through /proc gives a new, read-only open file
        description."""
        if self._ro_fd is None:
            self._ro_fd = os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)
        return self._ro_fd

    def acquire(self) -> SharedObject:
        """Take another reference (a MAP handle using these pages)."""
        self._refs += 1
        return self

    def release(self) -> None:
        """Drop a reference; the descriptors close with the last one (both, even if
        closing the first fails)."""
        self._refs -= 1
        if self._refs == 0:
            try:
                os.close(self.fd)
            finally:
                if self._ro_fd is not None:
                    os.close(self._ro_fd)

    def clear_byte(self, offset: int) -> None:
        """Write 0 at ``offset``: the same page cache every mapping sees."""
        os.pwrite(self.fd, b"\0", offset)


#: A grant-table entry of the hub: a page of a shared object.
Grant = model.Grant[SharedObject]


class GrantHandle:
    """The pages one SHARE or MAP gave a connection, and the unmap-notify set on them."""

    def __init__(
        self,
        kind: str,
        peer: int,
        grants: list[Grant],
        writable: bool,
    ) -> None:
        self.kind = kind
        self.peer = peer
        self.grants = grants
        self.writable = writable
        self.objects = list(dict.fromkeys(grant.pages for grant in grants))
        self.notify: tuple[int, PinnedBell] | None = None

    @property
    def refs(self) -> list[int]:
        """The refs of the pages, in mapping order."""
        return [grant.ref for grant in self.grants]

    def set_notify(self, offset: int, port: Port) -> None:
        """Arrange to clear byte ``offset`` and ring ``port`` on release (replacing)."""
        if not 0 <= offset < len(self.grants) * PAGE_SIZE:
            raise RequestError(
                errno.EINVAL,
                f"offset {offset} is outside the {len(self.grants)}-page mapping",
            )
        if self.kind == "map" and not self.writable:
            # A sharer's own mapping is writable even when its grant is read-only.
            raise RequestError(errno.EINVAL, "cannot clear a byte of a read-only mapping")
        self._drop_notify()
        self.notify = (offset, PinnedBell(port))

    def _drop_notify(self) -> None:
        if self.notify is not None:
            self.notify[1].release()
            self.notify = None

    def fire_notify(self, failures: list[str]) -> str | None:
        """Perform the unmap-notify, if any: byte first, then event (gntalloc's order).

        Each step is attempted even when the one before failed -- a peer whose live byte
        could not be cleared must still be woken -- and a failure is appended to
        ``failures`` rather than raised, so the caller can finish releasing."""
        if self.notify is None:
            return None
        offset, doorbell = self.notify
        grant = self.grants[offset // PAGE_SIZE]
        done = []
        if _attempt(
            failures,
            f"clearing byte {offset}",
            grant.pages.clear_byte,
            grant.page * PAGE_SIZE + offset % PAGE_SIZE,
        ):
            done.append(f"cleared byte {offset}")
        if _attempt(failures, f"the event on port {doorbell.port}", doorbell.ring):
            done.append(f"event on port {doorbell.port}")
        self._drop_notify()
        return ", ".join(done) or None

    def describe(self) -> dict[str, object]:
        """The handle as the STATE reply shows it."""
        return {
            "kind": self.kind,
            "peer": self.peer,
            "refs": self.refs,
            "writable": self.writable,
            "notify": None if self.notify is None else [self.notify[0], self.notify[1].port],
        }


class GrantTable:
    """Every domain's grant table, its pages shared memory objects."""

    def __init__(self, limit: int = GRANTS_PER_DOMAIN) -> None:
        self.table: model.GrantTable[SharedObject] = model.GrantTable(SharedObject, limit)

    def share(self, domid: int, peer: int, count: int, writable: bool) -> GrantHandle:
        """Grant ``count`` fresh zeroed pages of ``domid`` to ``peer``, lowest refs first."""
        return GrantHandle("share", peer, self.table.share(domid, peer, count, writable), writable)

    def lookup(self, domid: int, ref: int) -> Grant:
        """The live grant ``ref`` of ``domid``; EINVAL if unknown or revoked."""
        return self.table.lookup(domid, ref)

    def map(self, domid: int, peer: int, refs: tuple[int, ...], writable: bool) -> GrantHandle:
        """Map ``peer``'s ``refs`` for ``domid``, enforcing grantee and access rules."""
        handle = GrantHandle("map", peer, self.table.map(domid, peer, refs, writable), writable)
        for obj in handle.objects:
            obj.acquire()
        return handle

    def release(self, handle: GrantHandle) -> str | None:
        """Unmap ``handle``: fire its notify, revoke a SHARE's refs, drop the pages.

        Returns what the notify did, for the log.  Every step runs even when an earlier
        one failed, so a failing notify leaks no ref and no descriptor; the failures are
        then raised together as one EIO :class:`RequestError`.  Existing foreign
        mappings of revoked pages stay valid: their holders have their own descriptors,
        as on Xen.
        """
        failures: list[str] = []
        fired = handle.fire_notify(failures)
        if handle.kind == "share":
            self.table.revoke(handle.grants)
        for obj in handle.objects:
            _attempt(failures, "closing the shared pages", obj.release)
        if failures:
            raise RequestError(
                errno.EIO,
                f"{handle.kind} handle refs {handle.refs} released, but "
                + "; ".join(failures)
                + (f" (done: {fired})" if fired else ""),
            )
        return fired

    def domains(self) -> set[int]:
        """Domains with at least one grant."""
        return self.table.domains()

    def snapshot(self) -> list[dict[str, object]]:
        """Every live grant, for STATE."""
        return [
            {
                "domid": g.domid,
                "ref": g.ref,
                "grantee": g.grantee,
                "writable": g.writable,
                "since": round(g.since, 6),
            }
            for g in self.table
        ]
