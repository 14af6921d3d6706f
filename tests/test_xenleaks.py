"""The real-Xen leak check's XenStore part, over the emulated store (its descriptor and
mapping parts need /dev/xen and run in tests/xen_real/test_real_plugin.py)."""

from __future__ import annotations

from vchansim.backends.memory import MemoryBackend, MemoryHypervisor
from vchansim.leaks import LeakKind
from vchansim.xenleaks import XenSnapshot

HOME = "/local/domain/0"


def test_only_values_written_since_the_snapshot_are_leaks() -> None:
    backend = MemoryBackend(0, hypervisor=MemoryHypervisor())
    with backend.store() as store:
        store.write(f"{HOME}/data/old", b"kept")
        before = XenSnapshot.take(store, HOME)
        assert before.leaks(store) == []
        store.write(f"{HOME}/data/vchan/x/ring-ref", b"8")
        store.write(f"{HOME}/data/vchan/empty", b"")
        (leak,) = before.leaks(store)
        assert leak.kind is LeakKind.XENSTORE
        assert str(leak) == f"xenstore node {HOME}/data/vchan/x/ring-ref = b'8' left behind"
        store.rm(f"{HOME}/data/vchan")
        assert before.leaks(store) == []
