"""Leak checks return records: a kind to filter on, and the line for people."""

from __future__ import annotations

import time

from vchansim.backends.memory import MemoryBackend, MemoryHypervisor
from vchansim.backends.shm import ShmBackend
from vchansim.leaks import Leak, LeakKind, find_leaks, memory_leaks, own_descriptors
from vchansim.rundir import RunDir


def kinds(found: list[Leak]) -> list[str]:
    return sorted(str(leak.kind) for leak in found)


def test_each_leak_has_its_kind_and_reads_as_its_line(rundir: RunDir) -> None:
    backend = ShmBackend(1)
    grants, events, store = backend.grants(), backend.events(), backend.store()
    try:
        grants.share(2, 1)
        events.bind_unbound(2)
        store.write("data/left", b"behind")
        found = find_leaks(rundir)
        by_kind = {leak.kind: str(leak) for leak in found}
        assert by_kind[LeakKind.GRANT] == "grant ref 1 of dom1 (to dom2) still in the table"
        assert by_kind[LeakKind.PORT].startswith("event port 1 of dom1 still bound")
        assert by_kind[LeakKind.XENSTORE] == (
            "xenstore node /local/domain/1/data/left = 'behind' left behind"
        )
        assert {LeakKind.CONNECTION, LeakKind.FD} <= set(by_kind)
        only = find_leaks(rundir, kinds={LeakKind.GRANT, LeakKind.XENSTORE})
        assert kinds(only) == ["grant", "xenstore"]
    finally:
        store.rm("data/left")
        store.close()
        events.close()
        grants.close()


def test_waiting_stops_once_only_lasting_leaks_are_left(rundir: RunDir) -> None:
    store = ShmBackend(1).store()
    store.write("data/stays", b"1")
    store.close()
    started = time.monotonic()
    found = find_leaks(rundir, timeout=5.0)
    assert kinds(found) == ["xenstore"]  # nothing else: its connection is gone
    assert time.monotonic() - started < 2.5  # a node does not go away by waiting
    cleanup = ShmBackend(1).store()
    cleanup.rm("data/stays")
    cleanup.close()


def test_descriptors_open_before_are_not_blamed(rundir: RunDir) -> None:
    earlier = ShmBackend(1).events()  # stands for what an earlier test left open
    earlier.bind_unbound(0)
    before = own_descriptors()
    mine = ShmBackend(2).events()
    port = mine.bind_unbound(0)
    try:
        fds = [leak for leak in find_leaks(rundir, open_before=before) if leak.kind == "fd"]
        assert fds and all(leak.detail.startswith("fd ") for leak in fds)
        assert set(before) & {int(leak.detail.split()[1]) for leak in fds} == set()
        assert any(f"eventfd of port {port}" in str(leak) for leak in fds)
    finally:
        mine.close()
        earlier.close()


def test_the_in_process_hypervisor_reports_the_same_kinds():
    hv = MemoryHypervisor()
    backend = MemoryBackend(1, hypervisor=hv)
    grants, events, store = backend.grants(), backend.events(), backend.store()
    grants.share(0, 1)
    events.bind_unbound(0)
    store.write("data/left", b"behind")
    found = memory_leaks(hv)
    assert kinds(found) == ["grant", "port", "xenstore"]
    assert "xenstore node /local/domain/1/data/left = 'behind' left behind" in map(str, found)
    store.rm("data/left")
    store.close()
    events.close()
    grants.close()
    assert memory_leaks(hv) == []
