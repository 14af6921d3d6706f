"""The life of the hub: started on first use, one per run directory, idle exit, clean
shutdown, and what survives its death."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import procs

from vchansim.backends.shm import ShmBackend
from vchansim.channel import Vchan
from vchansim.errors import BackendError, StoreError
from vchansim.hub import Op, hub_running, open_hub
from vchansim.rundir import RunDir

CLIENT = """
from vchansim.channel import Vchan
chan = Vchan.client(ShmBackend(2), 1, "/local/domain/1/data/vchan/2/life")
say("connected")
while True:
    line = hear()
    if not line:
        break
    if line == "echo":
        data = chan.recv(4)
        chan.write(data[::-1])
        say("echoed")
chan.close()
"""


def _hub_processes(rundir: RunDir) -> list[int]:
    """Pids of live hubs started for ``rundir``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"vchansim.hub" in argv and os.fsencode(rundir.path) in argv and state != "Z":
            found.append(int(name))
    return found


def _hub_pid(rundir: RunDir) -> int:
    with open_hub(rundir, 0) as conn:
        return conn.hub_pid


def test_first_use_starts_a_hub_that_exits_when_idle(
    rundir: RunDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VCHANSIM_HUB_IDLE", "0.3")
    assert not hub_running(rundir)
    start = time.monotonic()
    grants = ShmBackend(1).grants()
    started = time.monotonic() - start
    print(f"\nhub start (first use, cold interpreter): {started * 1e3:.0f} ms")
    [pid] = _hub_processes(rundir)
    assert not procs.wait_exit(pid, 0.6)  # a connection keeps it alive past its idle time
    grants.close()
    assert procs.wait_exit(pid, 5.0)
    assert not rundir.hub.exists()
    assert "exiting: idle for 0.3 s" in rundir.log.read_text()


def test_concurrent_first_users_start_one_hub(
    rundir: RunDir, spawn: Callable[..., procs.Child]
) -> None:
    code = """
    from vchansim.hub import open_hub
    conn = open_hub(None, 1)
    say("hub", conn.hub_pid)
    hear()
    """
    children = [spawn(code) for _ in range(4)]
    pids = {int(child.expect("hub")[0]) for child in children}
    assert len(pids) == 1
    assert _hub_processes(rundir) == list(pids)


@pytest.fixture
def served(
    rundir: RunDir, spawn: Callable[..., procs.Child]
) -> Iterator[tuple[Vchan, procs.Child]]:
    """A vchan between this process (domain 1, server) and a child (domain 2, client)."""
    server = Vchan.server(ShmBackend(1), 2, "data/vchan/2/life")
    child = spawn(CLIENT)
    child.expect("connected")
    yield server, child
    server.close()


def _echo(server: Vchan, child: procs.Child) -> None:
    child.send("echo")
    server.write(b"ping")
    assert server.recv(4) == b"gnip"
    child.expect("echoed")


def test_rings_keep_flowing_after_the_hub_is_killed(
    rundir: RunDir, served: tuple[Vchan, procs.Child]
) -> None:
    server, child = served
    _echo(server, child)
    old = _hub_pid(rundir)
    os.kill(old, signal.SIGKILL)
    assert procs.wait_exit(old)
    for _ in range(3):  # shared memory and eventfd notifications need no hub
        _echo(server, child)
    fresh = _hub_pid(rundir)  # the next use starts a new hub
    assert fresh != old
    _echo(server, child)
    other = Vchan.server(ShmBackend(1), 3, "data/vchan/3/after")
    other.close()


def _foreground_hub(rundir: RunDir) -> subprocess.Popen[bytes]:
    """``python -m vchansim.hub`` in the foreground, returned once it says it is ready."""
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "vchansim.hub", "--rundir", str(rundir.path)]
    hub = subprocess.Popen(
        [*command, "--ready-fd", str(write_end)],
        pass_fds=(write_end,),
        stderr=subprocess.PIPE,
        env=procs.child_env(rundir),
    )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as ready:
        assert int(ready.readline()) == hub.pid
    return hub


def test_sigterm_removes_the_hub_sockets(rundir: RunDir) -> None:
    hub = _foreground_hub(rundir)
    with open_hub(rundir, 4) as conn:
        conn.call(Op.XS_SOCKET, 5)
    assert sorted(os.listdir(rundir.xs_dir)) == ["4", "5"]
    hub.send_signal(signal.SIGTERM)
    _, log = hub.communicate(timeout=5.0)
    assert hub.returncode == 0
    assert not rundir.hub.exists()
    assert os.listdir(rundir.xs_dir) == []
    assert b"exiting: asked to stop" in log


def test_exit_leaves_a_newer_hubs_socket_alone(rundir: RunDir) -> None:
    hub = _foreground_hub(rundir)
    os.unlink(rundir.hub)
    newer = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    newer.bind(os.fspath(rundir.hub))
    try:
        hub.send_signal(signal.SIGINT)
        hub.communicate(timeout=5.0)
        assert hub.returncode == 0
        assert rundir.hub.exists()
    finally:
        newer.close()


def test_foreground_hub_refuses_a_served_directory(rundir: RunDir) -> None:
    first = _foreground_hub(rundir)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "vchansim.hub", "--rundir", str(rundir.path)],
            capture_output=True,
            env=procs.child_env(rundir),
            timeout=10,
        )
        assert second.returncode == 1
        assert f"{rundir.hub} is already being served".encode() in second.stderr
        assert _hub_pid(rundir) == first.pid
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=5.0)


def test_start_failure_is_reported_with_the_log(rundir: RunDir) -> None:
    rundir.hub.mkdir()  # something that is not a socket squats the hub's path
    with pytest.raises(BackendError, match="failed to start") as info:
        ShmBackend(1).events()
    assert "cannot start" in str(info.value) and str(rundir.log) in str(info.value)


def test_state_describes_the_hub(rundir: RunDir) -> None:
    with open_hub(rundir, 1) as conn:
        state = json.loads(conn.call(Op.STATE).text)
    assert state["hub"]["pid"] == conn.hub_pid and state["hub"]["embedded"]
    assert state["hub"]["rundir"] == str(rundir.path)
    assert [c["domid"] for c in state["connections"]] == [1]
    assert state["you"] == state["connections"][0]["id"]


def test_store_needs_only_the_domains_socket_and_outlives_a_dead_hubs_files(
    rundir: RunDir,
) -> None:
    hub = _foreground_hub(rundir)
    backend = ShmBackend(5)
    with backend.store() as store:  # the hub has not served domain 5 yet: asked, it listens
        store.write("data/x", "1")
    os.unlink(rundir.hub)  # with no control socket, the domain's own socket still serves
    with backend.store() as store:
        assert store.read("data/x") == b"1"
    hub.kill()
    hub.communicate(timeout=5.0)
    assert (rundir.xs_dir / "5").exists()  # the killed hub's leftover refuses connections,
    with backend.store() as store:  # so the backend starts a new hub and asks it
        assert store.read("domid") == b"5"
        with pytest.raises(StoreError):
            store.read("data/x")  # a new hub, a new store
