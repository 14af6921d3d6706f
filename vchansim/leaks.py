"""Leak checks for tests: after every endpoint closed or died, is anything left behind?

"Left behind" means what a resource leak in a real vchan program would leave: grants
still in the table, event ports still bound, hub connections or xenstore connections
still open, XenStore nodes still written, descriptors of shared memory or eventfds
still open in this process, and processes of this run directory still alive.  The hub
learns about dead processes asynchronously (end-of-file on their sockets), so the check
polls the hub's STATE until it is clean or a deadline passes.

XenStore nodes count when they hold a value (other than a domain's ``domid`` base node):
empty nodes are the tree's skeleton or bare directories, which libxenvchan itself leaves
behind on close (the parents of its path, docs/protocol.md §5.8).

Each finding is a :class:`Leak`: its ``kind`` lets callers pick what concerns them (the
scenario runner excuses XenStore nodes of a killed server, and ignores descriptors of its
own process, which are not the endpoints'); its ``str()`` is the line for people.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from .backends.memory import MemoryHypervisor
from .backends.shm import held_descriptors
from .hub.grants import SHM_PREFIX
from .hub.launcher import RunDirLike, hub_running
from .hub.protocol import HubConnection, HubGoneError, Op
from .layout import EVENT_CHANNEL_KEY, RING_REF_KEY
from .rundir import RUNDIR_ENV, RunDir, prepare_rundir
from .xen import atoi

_POLL_INTERVAL = 0.01
_SHM_PATH = "/dev/shm" + SHM_PREFIX
#: The only base node with a value: each domain's ``domid``.
_DOMID_NODE = re.compile(r"/local/domain/\d+/domid\Z")
#: A vchan server's published key under its domain's home: (domid, key).
_SERVER_KEY = re.compile(rf"/local/domain/(\d+)/.+/({RING_REF_KEY}|{EVENT_CHANNEL_KEY})\Z")


class LeakKind(StrEnum):
    """What sort of resource was left behind."""

    GRANT = "grant"  # a grant-table entry
    PORT = "port"  # a bound event-channel port
    CONNECTION = "connection"  # an open hub or xenstore connection
    XENSTORE = "xenstore"  # a XenStore node holding a value
    FD = "fd"  # a descriptor of this process (shared memory, eventfd, epoll)
    PROCESS = "process"  # a live process of the run directory


#: Kinds that do not change by waiting: a XenStore node stays until its owner removes it
#: (and an owner still at work shows as a connection or a process).  The others may be
#: the hub, or a closing handle of this process, catching up.
LASTING_KINDS = frozenset({LeakKind.XENSTORE})


@dataclass(frozen=True)
class Leak:
    """One thing left behind; ``str()`` gives the line that names it."""

    kind: LeakKind
    detail: str

    def __str__(self) -> str:
        return self.detail


# -- the hub's view ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Live:
    """The grant refs and event ports that exist, as (domid, number): what a vchan
    server's published keys must name while the server lives."""

    grants: frozenset[tuple[int, int]]
    ports: frozenset[tuple[int, int]]

    def staleness(self, path: str, value: str) -> str:
        """Why the node at ``path`` is a dead server's key, or "" if it is not one."""
        match = _SERVER_KEY.match(path)
        if match is None:
            return ""
        domid, key, number = int(match[1]), match[2], atoi(value.encode())
        if key == RING_REF_KEY and (domid, number) not in self.grants:
            gone = f"domain {domid} has no grant ref {number}"
        elif key == EVENT_CHANNEL_KEY and (domid, number) not in self.ports:
            gone = f"domain {domid} has no port {number}"
        else:
            return ""
        return f" (a stale vchan server key: {gone}; its server is gone)"


def _node_leaks(nodes: dict[str, str], live: _Live) -> Iterator[Leak]:
    """XenStore nodes (path -> value) that hold a value nobody removed; a vchan server's
    keys that name a grant or port no longer there say so."""
    for path, value in sorted(nodes.items()):
        if value and not _DOMID_NODE.match(path):
            stale = live.staleness(path, value)
            yield Leak(LeakKind.XENSTORE, f"xenstore node {path} = {value!r} left behind{stale}")


def _store_leaks(store: dict[str, Any], live: _Live) -> Iterator[Leak]:
    if store["connections"]:
        yield Leak(LeakKind.CONNECTION, f"{store['connections']} xenstore connection(s) still open")
    yield from _node_leaks(store["nodes"], live)


def hub_leaks(state: dict[str, Any]) -> list[Leak]:
    """What a STATE reply shows still held, apart from the asker's own connection."""
    found = []
    for conn in state["connections"]:
        if conn["id"] == state["you"]:
            continue
        held = ", ".join(
            [f"{h['kind']} handle {h['handle']} refs {h['refs']}" for h in conn["handles"]]
            + [f"port {port}" for port in conn["ports"]]
        )
        found.append(
            Leak(
                LeakKind.CONNECTION,
                f"hub connection {conn['id']} (dom{conn['domid']}, pid {conn['pid']}) still open"
                + (f", holding {held}" if held else ""),
            )
        )
    found += [
        Leak(
            LeakKind.GRANT,
            f"grant ref {g['ref']} of dom{g['domid']} (to dom{g['grantee']}) still in the table",
        )
        for g in state["grants"]
    ]
    found += [
        Leak(
            LeakKind.PORT,
            f"event port {p['port']} of dom{p['domid']} still bound ({p['state']}, "
            f"remote dom{p['remote']})",
        )
        for p in state["ports"]
    ]
    live = _Live(
        frozenset((g["domid"], g["ref"]) for g in state["grants"]),
        frozenset((p["domid"], p["port"]) for p in state["ports"]),
    )
    found += list(_store_leaks(state["xenstore"], live))
    return found


def memory_leaks(hv: MemoryHypervisor) -> list[Leak]:
    """What an in-process hypervisor (the ``memory`` backend) still holds: grants, ports
    and XenStore values, worded as for the hub."""
    with hv.lock:
        found = [
            Leak(LeakKind.GRANT, f"grant ref {grant.ref} of dom{grant.domid} still in the table")
            for grant in hv.grants
        ]
        found += [
            Leak(LeakKind.PORT, f"event port {port.number} of dom{port.domid} still bound")
            for port in hv.ports
        ]
        store = hv.xenstore
        nodes = {
            path: node.value.decode("utf-8", "replace")
            for path in store.paths()
            if (node := store.node(path)) is not None
        }
        live = _Live(
            frozenset((grant.domid, grant.ref) for grant in hv.grants),
            frozenset((port.domid, port.number) for port in hv.ports),
        )
    return found + list(_node_leaks(nodes, live))


# -- this process and its neighbours ------------------------------------------------------


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def own_descriptors() -> dict[int, str]:
    """vchansim's descriptors open in this process now: fd -> what it is (a hub's shared
    memory, or an eventfd or epoll of an event handle)."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        target = _readlink(f"/proc/self/fd/{name}")
        if target is not None and target.startswith(_SHM_PATH):
            found[int(name)] = f"still holds shared memory {target}"
    for fd, what in held_descriptors().items():
        if _fd_is_open(fd):
            found[fd] = f"is still open: {what}"
    return found


def own_descriptor_leaks(open_before: Mapping[int, str] | None = None) -> list[Leak]:
    """vchansim's descriptors still open in this process, but those already open, as the
    same thing, in ``open_before`` (from :func:`own_descriptors`): a check made for one
    test then blames that test, and not every test after one that leaked."""
    before = open_before or {}
    return [
        Leak(LeakKind.FD, f"fd {fd} of this process {what}")
        for fd, what in sorted(own_descriptors().items())
        if before.get(fd) != what
    ]


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return pids


def _process_ties(pid: int, rundir: RunDir, hub_pid: int | None) -> str | None:
    """Why process ``pid`` belongs to this run directory, or None if it does not."""
    base = f"/proc/{pid}"
    try:
        if Path(f"{base}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return None  # exited; only its parent's bookkeeping is left
        environ = Path(f"{base}/environ").read_bytes().split(b"\0")
        argv = Path(f"{base}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    where = os.fsencode(rundir.path)
    if RUNDIR_ENV.encode() + b"=" + where in environ:
        return f"has {RUNDIR_ENV}={rundir.path}"
    if b"vchansim.hub" in argv and where in argv:
        return "is another hub of this run directory"
    if hub_pid is not None:
        prefix = f"{_SHM_PATH}{hub_pid}-"
        for name in _list(f"{base}/fd"):
            target = _readlink(f"{base}/fd/{name}")
            if target is not None and target.startswith(prefix):
                return f"holds this hub's shared memory {target}"
    return None


def _command_line(pid: str) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "exited"
    return argv.replace(b"\0", b" ").strip().decode(errors="replace")[:80]


def _list(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def process_leaks(rundir: RunDir, hub_pid: int | None) -> list[Leak]:
    """Live processes of this run directory other than us, our ancestors and the hub."""
    skip = _ancestors() | ({hub_pid} if hub_pid is not None else set())
    found = []
    for name in _list("/proc"):
        if not name.isdigit() or int(name) in skip:
            continue
        why = _process_ties(int(name), rundir, hub_pid)
        if why is not None:
            found.append(Leak(LeakKind.PROCESS, f"process {name} ({_command_line(name)}) {why}"))
    return found


# -- the checks ----------------------------------------------------------------------------


class _StateReader:
    """Reads the hub's STATE over one connection, reconnecting if the hub restarted."""

    def __init__(self, rundir: RunDir) -> None:
        self.rundir = rundir
        self._conn: HubConnection | None = None

    def read(self) -> dict[str, Any] | None:
        """The current STATE, or None if no hub runs."""
        for _ in range(2):
            if self._conn is None:
                if not hub_running(self.rundir):
                    return None
                try:
                    self._conn = HubConnection.connect(self.rundir.hub, 0)
                except (FileNotFoundError, ConnectionRefusedError, HubGoneError):
                    return None
            try:
                state: dict[str, Any] = json.loads(self._conn.call(Op.STATE).text)
                return state
            except HubGoneError:
                self.close()
        return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _collect(
    rundir: RunDir,
    reader: _StateReader,
    kinds: Collection[LeakKind],
    open_before: Mapping[int, str] | None,
) -> list[Leak]:
    state = reader.read()
    hub_pid = state["hub"]["pid"] if state is not None else None
    found = hub_leaks(state) if state is not None else []
    if LeakKind.FD in kinds:
        found += own_descriptor_leaks(open_before)
    if LeakKind.PROCESS in kinds:
        found += process_leaks(rundir, hub_pid)
    return [leak for leak in found if leak.kind in kinds]


def find_leaks(
    rundir: RunDirLike = None,
    *,
    timeout: float = 0.0,
    kinds: Collection[LeakKind] = frozenset(LeakKind),
    open_before: Mapping[int, str] | None = None,
) -> list[Leak]:
    """Everything of ``kinds`` left behind in ``rundir``; empty when clean.  Descriptors
    of this process in ``open_before`` do not count (see :func:`own_descriptor_leaks`).

    Polls for up to ``timeout`` seconds for the hub to catch up with connections that
    just closed, returning as soon as nothing is left that waiting could change (see
    :data:`LASTING_KINDS`).
    """
    checked = prepare_rundir(rundir)
    reader = _StateReader(checked)
    deadline = time.monotonic() + timeout
    try:
        while True:
            found = _collect(checked, reader, kinds, open_before)
            settling = [leak for leak in found if leak.kind not in LASTING_KINDS]
            if not settling or time.monotonic() >= deadline:
                return found
            time.sleep(_POLL_INTERVAL)
    finally:
        reader.close()


def assert_no_leaks(
    rundir: RunDirLike = None,
    *,
    timeout: float = 2.0,
    open_before: Mapping[int, str] | None = None,
) -> None:
    """Raise AssertionError listing what is left behind, after waiting up to ``timeout``
    (descriptors in ``open_before`` excepted, see :func:`own_descriptor_leaks`)."""
    found = find_leaks(rundir, timeout=timeout, open_before=open_before)
    if found:
        raise AssertionError(
            f"vchansim resources left behind in {prepare_rundir(rundir).path}:\n  "
            + "\n  ".join(map(str, found))
        )
