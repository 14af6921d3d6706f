"""A vchan between two unrelated interpreters over the shm backend, and the leak check
that must come back clean after they close or die -- and must not when they leak."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from helpers import procs

from vchansim.backends.shm import ShmBackend
from vchansim.hub import Op, open_hub
from vchansim.leaks import assert_no_leaks, find_leaks
from vchansim.rundir import RunDir

SIZE = 1 << 20
PATH = "data/vchan/2/test"

#: Domain 1 serves PATH to domain 2: it checksums what it reads, then streams SIZE bytes.
SERVER = f"""
import hashlib
from vchansim.channel import Vchan
chan = Vchan.server(ShmBackend(1), 2, "{PATH}", 16384, 65536)
say("listening")
digest, got = hashlib.sha256(), 0
while got < {SIZE}:
    data = chan.read(65536)
    digest.update(data)
    got += len(data)
say("received", digest.hexdigest())
chan.write(bytes(range(256)) * {SIZE // 256})
say("sent")
while chan.is_open() == 1:  # wait for the client to go, however it goes
    chan.wait()
say("peer-gone", chan.is_open())
chan.close()
"""

#: Domain 2 connects, streams SIZE bytes of its own, and checksums what comes back.
CLIENT = f"""
import hashlib
from vchansim.channel import Vchan
chan = Vchan.client(ShmBackend(2), 1, "/local/domain/1/{PATH}")
say("connected")
chan.write(bytes(reversed(range(256))) * {SIZE // 256})
digest, got = hashlib.sha256(), 0
while got < {SIZE}:
    data = chan.read(65536)
    digest.update(data)
    got += len(data)
say("received", digest.hexdigest())
if hear() == "close":
    chan.close()
    say("closed")
hear()
"""


def _exchange(spawn: Callable[..., procs.Child]) -> tuple[procs.Child, procs.Child]:
    server = spawn(SERVER)
    server.expect("listening")
    client = spawn(CLIENT)
    client.expect("connected")
    sent_by_client = bytes(reversed(range(256))) * (SIZE // 256)
    sent_by_server = bytes(range(256)) * (SIZE // 256)
    assert server.expect("received") == [hashlib.sha256(sent_by_client).hexdigest()]
    assert client.expect("received") == [hashlib.sha256(sent_by_server).hexdigest()]
    server.expect("sent")
    return server, client


def test_two_interpreters_move_data_both_ways(
    rundir: RunDir, spawn: Callable[..., procs.Child]
) -> None:
    server, client = _exchange(spawn)
    client.send("close")
    client.expect("closed")
    assert server.expect("peer-gone") == ["0"]
    client.send("exit")
    assert client.wait() == 0 and server.wait() == 0
    assert_no_leaks(rundir)


def test_leak_check_is_clean_after_a_peer_is_killed(
    rundir: RunDir, spawn: Callable[..., procs.Child]
) -> None:
    server, client = _exchange(spawn)
    client.kill()
    assert server.expect("peer-gone") == ["0"]
    assert server.wait() == 0
    assert_no_leaks(rundir)


def test_leak_check_reports_what_is_left_open(
    rundir: RunDir, spawn: Callable[..., procs.Child]
) -> None:
    grants = ShmBackend(1).grants()
    events = ShmBackend(1).events()
    store = ShmBackend(1).store()
    lingering = spawn("e = ShmBackend(3).events(); e.bind_unbound(1); say('bound'); hear()")
    try:
        mapping = grants.share(2, 2)
        port = events.bind_unbound(2)
        store.write("data/left", b"behind")
        lingering.expect("bound")
        found = "\n".join(map(str, find_leaks(rundir)))
        assert "grant ref 1 of dom1 (to dom2) still in the table" in found
        assert "grant ref 2 of dom1" in found
        assert f"event port {port} of dom1 still bound" in found
        assert "share handle 1 refs [1, 2]" in found
        assert "xenstore connection(s) still open" in found
        assert "xenstore node /local/domain/1/data/left = 'behind' left behind" in found
        assert "still holds shared memory /dev/shm/vchansim-" in found  # the mapping's fd
        assert f"incoming eventfd of port {port}" in found
        assert f"process {lingering.pid} " in found and "VCHANSIM_RUNDIR" in found
        assert f"(dom3, pid {lingering.pid}) still open" in found
    finally:
        lingering.close()
        store.rm("data/left")
        store.close()
        mapping.close()
        events.close()
        grants.close()
    assert_no_leaks(rundir)


def test_base_nodes_and_bare_directories_are_not_leaks(rundir: RunDir) -> None:
    store = ShmBackend(1).store()
    try:
        store.mkdir("data/vchan/2")  # what libxenvchan leaves behind on close
    finally:
        store.close()
    assert_no_leaks(rundir)
    with open_hub(rundir, 0) as conn:
        nodes = json.loads(conn.call(Op.STATE).text)["xenstore"]["nodes"]
    assert "/local/domain/1/data/vchan/2" in nodes
