"""Many channels set up at the same moment (qrexec starts several per call): every one
completes, and none fails because the others are starting too.

Four processes each start sixteen server+client pairs at once from as many threads, so
the hub sees a few hundred connections arrive together -- more than a listen backlog of
the old default held.  What is asserted is that all 64 set-ups succeed and carry data;
how long they take is a figure of ``vchansim bench`` (its concurrent set-up case).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

from helpers import procs

from vchansim.backends.shm import ShmBackend
from vchansim.channel import Vchan
from vchansim.hub.launcher import ensure_hub, open_hub
from vchansim.hub.protocol import dial
from vchansim.rundir import RunDir

PROCESSES, THREADS = 1, 64

SETUPS = """
import json, sys, threading, traceback
import vchansim
index, count = int(sys.argv[1]), int(sys.argv[2])
sys.stdin.readline()  # the go: every process starts together
barrier = threading.Barrier(count)
failures = []
def one(i):
    name = f"data/many/{index}-{i}"
    try:
        barrier.wait()
        server = vchansim.Vchan.server(vchansim.get_backend("shm", domid=1), 0, name)
        client = vchansim.Vchan.client(
            vchansim.get_backend("shm", domid=0), 1, "/local/domain/1/" + name
        )
        client.write(b"x")
        assert server.read(1) == b"x"
        client.close()
        server.close()
    except Exception:
        failures.append(traceback.format_exc())
threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(failures))
"""


def test_64_setups_started_at_once_all_succeed(rundir: RunDir) -> None:
    ensure_hub(rundir)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", SETUPS, str(index), str(THREADS)],
            env=procs.child_env(rundir),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(PROCESSES)
    ]
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    failures: list[str] = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        failures += json.loads(out)
    assert failures == []


def test_connections_arriving_while_the_hub_is_busy_queue_instead_of_failing(
    rundir: RunDir,
) -> None:
    """A hub that cannot accept for a moment (stopped here; busy, in life) sees a burst
    of connections wait in its backlog.  With AF_UNIX a queued connect completes at
    once, so 200 in a row either all succeed or one is refused: no timing involved."""
    with open_hub(rundir, 0) as conn:
        hub = conn.hub_pid
    os.kill(hub, signal.SIGSTOP)
    sockets = []
    try:
        for _ in range(200):
            sockets.append(dial(rundir.hub))
    finally:
        os.kill(hub, signal.SIGCONT)
        for sock in sockets:
            sock.close()
    assert len(sockets) == 200
    with open_hub(rundir, 0) as conn:  # and the hub serves on
        assert conn.hub_pid == hub


def _xs_requests(rundir: RunDir, domid: int, path: str) -> list[str]:
    """The hub log's xenstore requests of domain ``domid`` that name ``path``."""
    lines = rundir.log.read_text().splitlines()
    return [line.split(" ", 3)[3] for line in lines if f" dom{domid} " in line and path in line]


def test_a_waiting_client_makes_a_bounded_number_of_requests_not_a_poll(rundir: RunDir) -> None:
    """A client started before its server waits on a watch of the ring-ref key: it asks
    the store again only when an event comes (the watch's first one, the server's commit),
    however long the server takes, so a setup costs the same few requests every time."""
    ensure_hub(rundir)
    path = "/local/domain/1/data/waited"
    got: list[Vchan] = []
    client = threading.Thread(
        target=lambda: got.append(Vchan.client(ShmBackend(0), 1, path, wait=60)), daemon=True
    )
    client.start()
    ring_ref = f"{path}/ring-ref"
    procs.wait_for(lambda: f"WATCH {ring_ref}" in rundir.log.read_text(), what="the watch")
    server = Vchan.server(ShmBackend(1), 0, "data/waited")
    client.join(60)
    (chan,) = got
    server.write(b"late")
    assert chan.read(4) == b"late"
    found = f"READ {path}/event-channel -> '"
    procs.wait_for(lambda: any(found in line for line in _xs_requests(rundir, 0, path)))
    reads = [line for line in _xs_requests(rundir, 0, path) if line.startswith("READ")]
    # One lookup (two reads) per event at most: at the start, on the watch's first
    # event, on the server's commit.
    assert 2 <= len(reads) <= 6, reads
    chan.close()
    server.close()
