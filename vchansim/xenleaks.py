"""Leak checks on real Xen: what a test or scenario left behind in this domain.

On the emulator the hub sees every grant, port and connection (:mod:`.leaks`).  On Xen
nothing answers for all domains, but what one process holds is visible from Linux:
a grant handle or an event handle is an open ``/dev/xen/*`` descriptor (closing it
unbinds the ports and ends the grants), a granted or mapped page is a mapping of
``/dev/xen/gntalloc`` or ``/dev/xen/gntdev`` in ``/proc/PID/maps``, and a published key
is a XenStore node under the domain's home.  A :class:`XenSnapshot` taken before says
what was there already, so a check blames only what appeared since.  A
:class:`GroupSnapshot` does the same for every process of a process group (a scenario's
runner and whatever it started, orphans included), since a process that exited holds
nothing: what is left on Xen is what a live process still holds, and the keys.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from .backends.base import Store
from .errors import StoreError
from .leaks import Leak, LeakKind

_DEVICES = "/dev/xen/"
_GRANT_DEVICES = ("/dev/xen/gntalloc", "/dev/xen/gntdev")


def _descriptors(pid: int) -> dict[str, str]:
    """fd -> device for each of the process's descriptors open on a Xen device."""
    found = {}
    base = f"/proc/{pid}/fd"
    for name in os.listdir(base):
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue  # closed while we looked
        if target.startswith(_DEVICES):
            found[name] = target
    return found


def _device_kind(device: str) -> LeakKind:
    """What an open Xen device keeps alive: ports (evtchn), grants (gntalloc, gntdev), or
    a connection (xenbus, privcmd)."""
    if device.endswith("/evtchn"):
        return LeakKind.PORT
    return LeakKind.GRANT if device.startswith(_GRANT_DEVICES) else LeakKind.CONNECTION


def _mappings(pid: int) -> set[str]:
    """The process's mappings of grant devices, as their /proc/PID/maps lines."""
    with open(f"/proc/{pid}/maps") as maps:
        return {line.strip() for line in maps if line.rstrip().endswith(_GRANT_DEVICES)}


def _values(store: Store, path: str) -> Iterator[tuple[str, bytes]]:
    """Every node under ``path`` (itself included) that holds a value."""
    try:
        value = store.read(path)
        children = store.directory(path)
    except StoreError:
        return  # removed while we walked
    if value:
        yield path, value
    for child in children:
        yield from _values(store, f"{path}/{child}")


def _new_nodes(store: Store, subtree: str, before: dict[str, bytes]) -> list[Leak]:
    """The nodes under ``subtree`` holding a value that were not in ``before``."""
    return [
        Leak(LeakKind.XENSTORE, f"xenstore node {path} = {value!r} left behind")
        for path, value in sorted(_values(store, subtree))
        if path not in before
    ]


@dataclass(frozen=True)
class XenSnapshot:
    """What a process held and what XenStore kept under a subtree, at one moment."""

    pid: int
    subtree: str
    held: frozenset[tuple[LeakKind, str]]
    nodes: dict[str, bytes]

    @classmethod
    def take(cls, store: Store, subtree: str, pid: int | None = None) -> XenSnapshot:
        """Snapshot process ``pid`` (default: this one) and XenStore under ``subtree``."""
        pid = os.getpid() if pid is None else pid
        return cls(pid, subtree, _held(pid), dict(_values(store, subtree)))

    def leaks(self, store: Store) -> list[Leak]:
        """What is held or written now that was not at the snapshot."""
        found = [Leak(kind, line) for kind, line in sorted(_held(self.pid) - self.held)]
        return found + _new_nodes(store, self.subtree, self.nodes)


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None  # gone


def _held(pid: int) -> frozenset[tuple[LeakKind, str]]:
    """What process ``pid`` holds of Xen's devices, each as (kind, line naming it)."""
    try:
        held = {
            (_device_kind(device), f"fd {fd} of process {pid} is still open on {device}")
            for fd, device in _descriptors(pid).items()
        }
        held |= {
            (LeakKind.GRANT, f"process {pid} still maps granted pages: {line}")
            for line in _mappings(pid)
        }
    except OSError:
        return frozenset()  # exited (or became a zombie) while we looked
    return frozenset(held)


def group_holdings(pgid: int) -> dict[int, frozenset[tuple[LeakKind, str]]]:
    """pid -> what it holds of Xen's devices, for each process of group ``pgid`` that
    holds anything."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and _group_of(int(name)) == pgid:
            held = _held(int(name))
            if held:
                found[int(name)] = held
    return found


@dataclass(frozen=True)
class GroupSnapshot:
    """What the processes of one group held of Xen's devices, and what XenStore kept
    under a subtree, at one moment."""

    pgid: int
    subtree: str
    holdings: dict[int, frozenset[tuple[LeakKind, str]]]
    nodes: dict[str, bytes]

    @classmethod
    def take(cls, store: Store, subtree: str) -> GroupSnapshot:
        """Snapshot this process's group and XenStore under ``subtree``."""
        pgid = os.getpgid(0)
        return cls(pgid, subtree, group_holdings(pgid), dict(_values(store, subtree)))

    def leaks(self, store: Store) -> list[Leak]:
        """What a process of the group holds now that it did not at the snapshot, and
        the nodes with values written since."""
        found = [
            Leak(kind, line)
            for pid, held in sorted(group_holdings(self.pgid).items())
            for kind, line in sorted(held - self.holdings.get(pid, frozenset()))
        ]
        return found + _new_nodes(store, self.subtree, self.nodes)

    def written_since(self, store: Store) -> list[str]:
        """The nodes under the subtree holding a value that were not at the snapshot."""
        return [path for path, _ in _values(store, self.subtree) if path not in self.nodes]
