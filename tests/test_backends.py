"""Choosing backends by name, entry points, and loopback vchans (allowed unless strict)."""

from __future__ import annotations

import errno
import sys
import textwrap
import time

import pytest

from vchansim import Vchan, get_backend
from vchansim.backends import available_backends, backend_class, register
from vchansim.backends.base import Backend, retry_while_watched
from vchansim.backends.memory import MemoryBackend
from vchansim.backends.shm import ShmBackend
from vchansim.errors import ConfigError, GrantError, ProtocolError, StoreError


def test_builtin_backends_by_name_and_environment(monkeypatch):
    assert {"memory", "shm", "xen"} <= set(available_backends())
    assert isinstance(get_backend("memory", domid=3), MemoryBackend)
    monkeypatch.setenv("VCHANSIM_BACKEND", "memory")
    monkeypatch.setenv("VCHANSIM_DOMID", "4")
    backend = get_backend()
    assert isinstance(backend, MemoryBackend) and backend.domid == 4


def test_unknown_backend_and_bad_domid_are_named(monkeypatch):
    with pytest.raises(ConfigError, match=r"unknown vchansim backend 'nope'.*memory"):
        get_backend("nope")
    monkeypatch.setenv("VCHANSIM_DOMID", "dom1")
    with pytest.raises(ConfigError, match="VCHANSIM_DOMID='dom1'"):
        get_backend("memory")
    with pytest.raises(ConfigError, match="32752 is outside"):
        get_backend("memory", domid=0x7FF0)


def test_register_and_entry_points(tmp_path, monkeypatch):
    class Custom(MemoryBackend):
        name = "custom"

    register("custom", Custom)
    assert backend_class("custom") is Custom
    # A third-party package advertising a backend through the entry-point group.
    package = tmp_path / "thirdparty_backend.py"
    package.write_text(
        textwrap.dedent(
            """
            from vchansim.backends.memory import MemoryBackend
            class ThirdParty(MemoryBackend):
                name = "thirdparty"
            """
        )
    )
    dist = tmp_path / "thirdparty_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: thirdparty-backend\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[vchansim.backends]\nthirdparty = thirdparty_backend:ThirdParty\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "thirdparty" in available_backends()
    backend = get_backend("thirdparty", domid=2)
    assert type(backend).__name__ == "ThirdParty" and isinstance(backend, Backend)
    sys.modules.pop("thirdparty_backend", None)


def test_loopback_vchan_works_on_shm(rundir):
    backend = ShmBackend(2, rundir=rundir)
    with (
        Vchan.server(backend, 2, "data/loop", 8192, 8192) as server,
        Vchan.client(backend, 2, "/local/domain/2/data/loop") as client,
    ):
        client.write(b"to myself")
        assert server.recv(9) == b"to myself"


def test_strict_refuses_loopback_vchans_as_xen_does(rundir):
    with pytest.raises(GrantError, match="loopback") as info:
        Vchan.server(ShmBackend(2, rundir=rundir, strict=True), 2, "data/loop")
    assert info.value.errno == errno.EPERM


@pytest.mark.parametrize("sizes", [(0, 0), (65536, 65536)])
def test_shm_refused_publish_reports_the_store_error_and_leaks_nothing(rundir, sizes):
    with pytest.raises(StoreError) as info:
        Vchan.server(ShmBackend(1, rundir=rundir), 0, "/local/domain/0/data/x", *sizes)
    assert info.value.errno == errno.EACCES


def test_shm_client_refusing_bad_orders_reports_them_and_leaks_nothing(rundir):
    with Vchan.server(ShmBackend(1, rundir=rundir), 0, "data/bad") as server:
        with server._page[16:20].cast("H") as orders:
            orders[0] = 9
        with pytest.raises(ProtocolError, match="left_order=9"):
            Vchan.client(ShmBackend(0, rundir=rundir), 1, "/local/domain/1/data/bad")


def test_a_watched_retry_tries_again_on_each_event_and_shows_it_to_the_caller() -> None:
    """The retry looks again only after an event of the caller's watch, and hands each
    event it read to ``on_event``: the first attempt fails and writes the key, whose
    event is the one reason for the second attempt."""
    backend = MemoryBackend(0)
    store = backend.store()
    store.watch("/local/domain/0/data/wanted", "tok")
    assert store.read_watch(5.0) == ("/local/domain/0/data/wanted", "tok")  # on WATCH
    tries: list[str] = []
    seen: list[tuple[str, str] | None] = []

    def attempt() -> bytes:
        try:
            return store.read("/local/domain/0/data/wanted")
        except StoreError as exc:
            tries.append(errno.errorcode[exc.errno])
            store.write("/local/domain/0/data/wanted", b"here")
            raise

    got = retry_while_watched(store, attempt, (StoreError,), time.monotonic() + 60, seen.append)
    assert got == b"here"
    assert tries == ["ENOENT"]
    assert seen == [("/local/domain/0/data/wanted", "tok")]


def test_a_watched_retry_that_sees_no_event_raises_its_last_failure() -> None:
    """With nothing changing, the deadline passes: the retry's own failure raises, and
    ``on_event`` hears that no event came (None)."""
    store = MemoryBackend(0).store()
    store.watch("/local/domain/0/data/never", "tok")
    store.read_watch(5.0)  # the event WATCH itself fires
    seen: list[tuple[str, str] | None] = []
    with pytest.raises(StoreError):
        retry_while_watched(
            store,
            lambda: store.read("/local/domain/0/data/never"),
            (StoreError,),
            time.monotonic() + 0.2,
            seen.append,
        )
    assert seen == [None]
