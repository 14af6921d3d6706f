"""Qubes OS's libvchan-xen, unmodified, between emulated domains.

libvchan-xen (tests/qubes.py builds it from the pinned sources) wraps Debian's
libxenvchan and adds what Qubes relies on: the xc_evtchn_* compatibility calls, and
``xc_evtchn_status`` on every ``libvchan_is_open()`` to notice a dead peer domain.  Its own
test programs move 8 MB each way under ``vchansim exec``, checked by SHA-256:

- ``test/node`` reads its stdin into the vchan on one end and writes the vchan to stdout
  on the other; its reader ends on libxenvchan's end-of-stream answer (-1, "read vchan").
- ``test/node-select`` is netcat over a vchan, selecting on its stdin and the vchan's
  descriptor.  A freshly bound interdomain port starts pending, as on Xen: without that
  its client, whose server wrote first, would sleep in select() for ever.  It exits when
  its stdin ends (closing the vchan) or the vchan closes, dropping whatever its peer had
  still in the ring, so the sender's stdin stays open until every byte has arrived.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import qubes
from helpers.clibs import foreground_hub
from qubes import DEADLINE, SIZE, Running

from vchansim.domains import create_domain

#: The vchan port number (libvchan-xen's "nodeid") every run uses.
PORT = "5"

pytestmark = [
    pytest.mark.cbuild,
    pytest.mark.skipif(
        not Path("/usr/include/libxenvchan.h").exists(),
        reason="needs Xen's headers and libraries (tools/install)",
    ),
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return qubes.build_vchan_xen(tmp_path_factory.mktemp("qubes"))


@pytest.fixture(scope="module")
def hub_dir() -> Iterator[Path]:
    """A private hub on which domains 1 and 2 exist before any of their programs runs:
    libvchan-xen takes a peer domain that does not exist for a dead one."""
    with foreground_hub() as (path, _):
        for domid in (1, 2):
            create_domain(domid, rundir=path)
        yield path


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "payload"
    path.write_bytes(os.urandom(SIZE))
    return path


def run_as(
    hub_dir: Path, tree: Path, domid: int, program: str, *args: str, stdin: int | IO[bytes]
) -> Running:
    """``vchansim exec --domid DOMID -- test/PROGRAM ARGS``, libvchan-xen on its path."""
    return qubes.run_as(hub_dir, domid, [tree / "test" / program, *args], tree, stdin=stdin)


@pytest.mark.parametrize(
    ("server", "client", "writer"),
    [(0, 1, "client"), (0, 1, "server"), (1, 2, "client")],
    ids=["vm-to-dom0", "dom0-to-vm", "vm-to-vm"],
)
def test_node_moves_8_mb(
    tree: Path, hub_dir: Path, payload: Path, server: int, client: int, writer: str
) -> None:
    ends = {"server": (server, client), "client": (client, server)}
    runs: dict[str, Running] = {}
    with payload.open("rb") as data:
        for role, (me, peer) in ends.items():
            mode = "write" if role == writer else "read"
            stdin = data if role == writer else subprocess.DEVNULL
            runs[role] = run_as(hub_dir, tree, me, "node", role, mode, str(peer), PORT, stdin=stdin)
        statuses = {role: run.finish() for role, run in runs.items()}
    reading = "server" if writer == "client" else "client"
    reader = runs[reading]
    assert reader.out.count == SIZE, reader.tail()
    assert reader.out.digest.hexdigest() == hashlib.sha256(payload.read_bytes()).hexdigest()
    assert statuses[writer] == 0, runs[writer].tail()
    # libxenvchan_read answers -1 once the writer has closed and the ring is empty
    assert statuses[reading] == 1 and b"read vchan" in reader.err.text


@pytest.mark.parametrize("sender", ["server", "client"], ids=["server-writes", "client-writes"])
def test_node_select_moves_8_mb(tree: Path, hub_dir: Path, payload: Path, sender: str) -> None:
    ends = {"server": (0, 1), "client": (1, 0)}
    runs: dict[str, Running] = {}
    for role, (me, peer) in ends.items():  # the server first: it may write before any read
        runs[role] = run_as(
            hub_dir, tree, me, "node-select", role, str(peer), PORT, stdin=subprocess.PIPE
        )
    receiver = runs["client" if sender == "server" else "server"]
    feeder = threading.Thread(target=_feed, args=(runs[sender].stdin, payload), daemon=True)
    feeder.start()
    arrived = receiver.out.arrived.wait(DEADLINE)
    feeder.join(DEADLINE)
    runs[sender].stdin.close()  # every byte is there: now the sender may close the vchan
    statuses = {role: run.finish() for role, run in runs.items()}
    receiver.stdin.close()
    assert arrived and receiver.out.count == SIZE, receiver.tail()
    assert receiver.out.digest.hexdigest() == hashlib.sha256(payload.read_bytes()).hexdigest()
    assert runs[sender].out.count == 0
    assert statuses == {"server": 0, "client": 0}, {r: run.tail() for r, run in runs.items()}


def _feed(pipe: IO[bytes], payload: Path) -> None:
    """Write the payload into a program's stdin (it blocks while the vchan is full)."""
    with payload.open("rb") as data:
        while chunk := data.read(1 << 16):
            pipe.write(chunk)
            pipe.flush()


def test_a_peer_domain_that_does_not_exist_is_dead(tree: Path, hub_dir: Path) -> None:
    """libvchan-xen's server in dom0 asks whether its client's domain is alive while it
    waits: domain 7 was never created, so node-select gives up at once (exit 0, as
    when its peer closes), its stdin still open."""
    run = run_as(hub_dir, tree, 0, "node-select", "server", "7", PORT, stdin=subprocess.PIPE)
    run.stdin.write(b"x")  # select() wakes, and is_open() asks about domain 7
    run.stdin.flush()
    status = run.finish()
    run.stdin.close()
    assert status == 0 and run.out.count == 0, run.tail()
