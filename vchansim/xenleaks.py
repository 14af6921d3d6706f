"""Leak checks on real Xen: what a test or scenario left behind in this domain.

On the emulator the hub sees every grant, port and connection (:mod:`.leaks`).  On Xen
nothing answers for all domains, but what one process holds is visible from Linux:
a grant handle or an event handle is an open ``/dev/xen/*`` descriptor (closing it
unbinds the ports and ends the grants), a granted or mapped page is a mapping of
``/dev/xen/gntalloc`` or ``/dev/xen/gntdev`` in ``/proc/PID/maps``, and a published key
is a XenStore node under the domain's home.  A :class:`XenSnapshot` taken before says
what was there already, so a check blames only what appeared since.
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


@dataclass(frozen=True)
class XenSnapshot:
    """What a process held and what XenStore kept under a subtree, at one moment."""

    pid: int
    subtree: str
    descriptors: dict[str, str]
    mappings: frozenset[str]
    nodes: dict[str, bytes]

    @classmethod
    def take(cls, store: Store, subtree: str, pid: int | None = None) -> XenSnapshot:
        """Snapshot process ``pid`` (default: this one) and XenStore under ``subtree``."""
        pid = os.getpid() if pid is None else pid
        return cls(
            pid,
            subtree,
            _descriptors(pid),
            frozenset(_mappings(pid)),
            dict(_values(store, subtree)),
        )

    def leaks(self, store: Store) -> list[Leak]:
        """What is held or written now that was not at the snapshot."""
        now = XenSnapshot.take(store, self.subtree, self.pid)
        found = [
            Leak(LeakKind.FD, f"fd {fd} of process {self.pid} is still open on {device}")
            for fd, device in sorted(now.descriptors.items())
            if self.descriptors.get(fd) != device
        ]
        found += [
            Leak(LeakKind.GRANT, f"process {self.pid} still maps granted pages: {line}")
            for line in sorted(now.mappings - self.mappings)
        ]
        found += [
            Leak(LeakKind.XENSTORE, f"xenstore node {path} = {value!r} left behind")
            for path, value in sorted(now.nodes.items())
            if path not in self.nodes
        ]
        return found
