"""Per-channel event statistics: each end counts what it sends in a shared page that
observers map read-only (hub op EVT_STATS)."""

from __future__ import annotations

import mmap
import os
import shutil
import subprocess
import sys
import time

import pytest
from helpers import procs

from vchansim import statspage
from vchansim.backends.shm import ShmBackend
from vchansim.errors import ConfigError
from vchansim.hub.launcher import open_hub
from vchansim.hub.observe import StatsView, map_stats
from vchansim.hub.protocol import Op
from vchansim.statspage import STATS_SIZE, Blocked


def _observe(rundir, domid: int, port: int) -> tuple[int, tuple[int, int]]:
    """(side of ``port``, (events sent by side 0, by side 1)) through a read-only mapping."""
    with open_hub(rundir, 0) as conn:
        reply = conn.call(Op.EVT_STATS, domid, port)
    (fd,) = reply.fds
    try:
        page = mmap.mmap(fd, STATS_SIZE, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    with page, memoryview(page) as view, view[:16].cast("Q") as counters:
        return reply.values[0], (counters[0], counters[1])


def test_both_directions_are_counted_and_visible_read_only(rundir):
    server_events = ShmBackend(1, rundir=rundir).events()
    client_events = ShmBackend(0, rundir=rundir).events()
    sport = server_events.bind_unbound(0)
    cport = client_events.bind_interdomain(1, sport)
    for _ in range(3):
        server_events.notify(sport)
    for _ in range(5):
        client_events.notify(cport)
    assert server_events.events_sent(sport) == (3, 5)
    assert client_events.events_sent(cport) == (5, 3)
    assert _observe(rundir, 1, sport) == (0, (3, 5))
    assert _observe(rundir, 0, cport) == (1, (3, 5))
    with open_hub(rundir, 0) as conn:
        (fd,) = conn.call(Op.EVT_STATS, 1, sport).fds
    try:
        with pytest.raises(PermissionError):
            mmap.mmap(fd, STATS_SIZE)  # read-write: refused, the descriptor is read-only
    finally:
        os.close(fd)
    client_events.close()
    server_events.close()


def test_unmap_notify_events_count_for_the_end_that_went_away(rundir):
    server = ShmBackend(1, rundir=rundir)
    events, grants = server.events(), server.grants()
    port = events.bind_unbound(0)
    client_events = ShmBackend(0, rundir=rundir).events()
    cport = client_events.bind_interdomain(1, port)
    page = grants.share(0, 1)
    grants.set_unmap_notify(page, 21, port)
    page.close()  # the notify fires: byte cleared, one event sent on the server's behalf
    assert client_events.pending(5.0) == cport
    assert client_events.events_sent(cport) == (0, 1)
    grants.close()
    events.close()
    client_events.close()


# -- wait words: what each end sleeps in ----------------------------------------------------


def _stats(rundir, domid: int, port: int) -> StatsView:
    """``port``'s statistics page, mapped read-only as observers map it."""
    with open_hub(rundir, 0) as conn:
        return map_stats(conn, domid, port)


def _waits_until(view: StatsView, want, timeout: float = procs.DEADLINE):
    """The wait words once ``want(waits)`` holds (polled, bounded by the deadline)."""
    deadline = time.monotonic() + timeout
    while not want(waits := view.waits()):
        assert time.monotonic() < deadline, f"wait words stayed {waits}"
        time.sleep(0.005)  # polling shared memory, bounded by the deadline
    return waits


SERVER = """
from vchansim import Vchan
chan = Vchan.server(ShmBackend(1), 0, "data/waits", read_min=1024, write_min=1024)
say("port", chan.port)
hear()
{action}
say("done")
chan.close()
"""


@pytest.mark.parametrize(
    ("action", "blocked"),
    [("chan.read(1)", Blocked.READ), ("chan.write(bytes(3000))", Blocked.WRITE)],
)
def test_a_python_end_says_what_it_sleeps_in_while_it_sleeps(rundir, action, blocked):
    from vchansim import Vchan

    server = procs.Child(SERVER.format(action=action), rundir)
    try:
        (port,) = server.expect("port")
        client = Vchan.client(ShmBackend(0, rundir=rundir), 1, "/local/domain/1/data/waits")
        started = time.monotonic()
        view = _stats(rundir, 1, int(port))
        server.send("go")
        srv, cli = _waits_until(view, lambda w: w[0] is not None)
        assert srv.blocked is blocked and cli is None
        assert started - 1.0 <= srv.since <= time.monotonic()  # the machine's monotonic clock
        if blocked is Blocked.READ:
            client.write(b"x")
        else:
            assert sum(len(client.read(3000)) for _ in range(2)) == 3000
        server.expect("done")
        assert view.waits() == (None, None)
        view.close()
        client.close()
        assert server.wait() == 0
    finally:
        server.close()


def test_wait_words_can_be_turned_off(rundir, monkeypatch):
    events = ShmBackend(1, rundir=rundir).events()
    port = events.bind_unbound(0)
    view = _stats(rundir, 1, port)
    events.waiting(port, Blocked.READ)
    assert view.waits()[0].blocked is Blocked.READ
    events.waiting(port, Blocked.NONE)
    assert view.waits() == (None, None)
    view.close()
    events.close()
    monkeypatch.setenv(statspage.ENV, "off")
    events = ShmBackend(1, rundir=rundir).events()
    port = events.bind_unbound(0)
    view = _stats(rundir, 1, port)
    events.waiting(port, Blocked.READ)
    assert view.waits() == (None, None)
    view.close()
    events.close()
    monkeypatch.setenv(statspage.ENV, "maybe")
    with pytest.raises(ConfigError, match="VCHANSIM_WAIT_STATE must be 'on' or 'off'"):
        ShmBackend(1, rundir=rundir).events()


C_PENDING = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.xenevtchn_open.restype = ctypes.c_void_p
lib.xenevtchn_bind_interdomain.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32]
lib.xenevtchn_pending.argtypes = [ctypes.c_void_p]
lib.xenevtchn_unmask.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
lib.xenevtchn_close.argtypes = [ctypes.c_void_p]
handle = lib.xenevtchn_open(None, 0)
if not handle:
    sys.exit(2)
port = lib.xenevtchn_bind_interdomain(handle, 1, int(sys.argv[2]))
if lib.xenevtchn_pending(handle) != port:  # a fresh interdomain port starts pending, as on Xen
    sys.exit(3)
lib.xenevtchn_unmask(handle, port)
print("bound", port, flush=True)
print("fired", lib.xenevtchn_pending(handle), flush=True)
lib.xenevtchn_close(handle)
"""


@pytest.mark.cbuild
@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (tools/install)")
def test_the_c_library_says_it_sleeps_in_pending(rundir):
    from vchansim import cbuild
    from vchansim.backends.shm import emulator_env

    library = str(cbuild.library_dir() / "libxenevtchn.so.1")
    events = ShmBackend(1, rundir=rundir).events()
    port = events.bind_unbound(0)
    view = _stats(rundir, 1, port)
    env = emulator_env(ShmBackend(0, rundir=rundir), c_libs=False)
    child = subprocess.Popen(
        [sys.executable, "-c", C_PENDING, library, str(port)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().split()[0] == "bound"
        srv, cli = _waits_until(view, lambda w: w[1] is not None)
        assert srv is None and cli.blocked is Blocked.EVENT
        events.notify(port)
        assert child.stdout.readline().split()[0] == "fired"
        assert child.wait(procs.DEADLINE) == 0
        assert view.waits() == (None, None)
        env[statspage.ENV] = "maybe"
        refused = subprocess.run(
            [sys.executable, "-c", C_PENDING, library, str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=procs.DEADLINE,
        )
        assert refused.returncode == 2
        assert "VCHANSIM_WAIT_STATE must be 'on' or 'off', not 'maybe'" in refused.stderr
    finally:
        procs.reap(child)
        view.close()
        events.close()
