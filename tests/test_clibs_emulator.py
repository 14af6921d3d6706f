"""Unmodified C programs on the emulator: the drop-in libraries against a real hub.

Two kinds of C program run here, each as real processes acting as emulated domains:
``clib-probe`` exercises the libxengnttab/libxenevtchn calls one by one (Xen's rules,
masks, unmap-notify, SIGKILL), and ``vchan-pipe`` drives Debian's own libxenvchan in both
roles, so the whole stack -- libxenvchan, our libraries, the hub, its xenstored -- moves
data whose SHA-256 both ends print.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import struct
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import procs
from helpers.clibs import (
    C_DIR,
    DEADLINE,
    NEEDS_CLIBS,
    RINGS,
    foreground_hub,
    wait_readable,
    wait_released,
)

from vchansim import cbuild
from vchansim.backends.shm import ShmBackend, emulator_env

pytestmark = [pytest.mark.cbuild, NEEDS_CLIBS]


@pytest.fixture(scope="module")
def rundir(hub_dir: Path) -> Path:
    """The run directory of the hub this module's tests share."""
    return hub_dir


@pytest.fixture(scope="module")
def probe() -> Path:
    return cbuild.build_program(C_DIR / "clib-probe.c", libs=("xenevtchn", "xengnttab"))


def env_of(domid: int, rundir: Path) -> dict[str, str]:
    """What ``vchansim exec --domid DOMID`` gives a program, on this module's hub."""
    return emulator_env(ShmBackend(domid, rundir=rundir))








# --------------------------------------------------------------------------- the calls

PROBE_CHECKS = [
    "share-map",
    "stitch",
    "large",
    "readonly",
    "refusals",
    "unmap-notify",
    "notify-on-kill",
    "mask",
    "evtchn-errors",
    "rebind",
    "blocking-pending",
    "strict-loopback",
]


def test_probe_lists_exactly_these_checks(probe: Path) -> None:
    listed = subprocess.run([probe, "list"], capture_output=True, text=True, check=True)
    assert listed.stdout.split() == PROBE_CHECKS


@pytest.mark.parametrize("check", PROBE_CHECKS)
def test_library_call(probe: Path, rundir: Path, check: str) -> None:
    result = subprocess.run(
        [probe, check],
        env=env_of(1, rundir),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"ok {check}"


def test_probes_leave_nothing_behind(probe: Path, rundir: Path) -> None:
    for check in ("share-map", "notify-on-kill", "rebind"):
        subprocess.run(
            [probe, check],
            env=env_of(1, rundir),
            check=True,
            capture_output=True,
            timeout=DEADLINE,
        )
    state = wait_released(rundir)
    assert state["grants"] == [] and state["ports"] == []


# --------------------------------------------------------------------------- libxenvchan


@dataclass
class Peer:
    """One running vchan-pipe, read line by line with deadlines."""

    proc: subprocess.Popen[bytes]
    lines: list[str] = field(default_factory=list)
    _buffer: bytes = b""

    def expect(self, prefix: str) -> str:
        """The first new output line, which must start with ``prefix``."""
        deadline = time.monotonic() + DEADLINE
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            assert wait_readable(fd, deadline), f"no {prefix!r} line; got {self.lines}"
            chunk = os.read(fd, 4096)
            assert chunk, f"exited without {prefix!r}: {self.lines} {self.stderr()}"
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        text = line.decode()
        self.lines.append(text)
        assert text.startswith(prefix), f"expected {prefix!r}, got {text!r} ({self.stderr()})"
        return text

    def go(self) -> None:
        """Release a peer started with --wait-go."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def finish(self) -> int:
        """Wait for exit; return the status."""
        return self.proc.wait(DEADLINE)

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")


def start(program: Path, rundir: Path, domid: int, args: Sequence[str]) -> Peer:
    proc = subprocess.Popen(
        [program, *args],
        env=env_of(domid, rundir),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return Peer(proc)


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    """Peers started by a test; any still running at the end are killed."""
    started: list[Peer] = []
    yield started
    for peer in started:
        procs.reap(peer.proc)


def channel(
    program: Path,
    rundir: Path,
    peers: list[Peer],
    name: str,
    server_args: Sequence[str],
    client_args: Sequence[str],
) -> tuple[Peer, Peer]:
    """Start a server in domain 1 for domain 2 and, once it listens, a client in domain 2."""
    path = f"/local/domain/1/data/vchan/2/{name}"
    server = start(program, rundir, 1, ["server", "2", path, *server_args])
    peers.append(server)
    server.expect("ready")
    client = start(program, rundir, 2, ["client", "1", path, *client_args])
    peers.append(client)
    client.expect("ready")
    return server, client


def digest_of(line: str) -> tuple[int, str]:
    _, count, sha, _ = line.split()
    return int(count), sha


def assert_same_data(sent: tuple[int, str], received: tuple[int, str], count: int) -> None:
    """One end received exactly the ``count`` bytes the other sent."""
    assert sent == received
    assert sent[0] == count and re.fullmatch("[0-9a-f]{64}", sent[1])


def transfer_digests(peer: Peer) -> dict[str, tuple[int, str]]:
    """The peer's "sent" and "received" results, whichever came first."""
    lines = [peer.expect("") for _ in range(2)]
    return {line.split()[0]: digest_of(line) for line in lines}


def xorshift_bytes(seed: int, count: int) -> bytes:
    """vchan-pipe's documented data: little-endian xorshift64 outputs from ``seed``."""
    mask = (1 << 64) - 1
    words = []
    x = seed
    for _ in range((count + 7) // 8):
        x ^= (x << 13) & mask
        x ^= x >> 7
        x ^= (x << 17) & mask
        words.append(x)
    return struct.pack(f"<{len(words)}Q", *words)[:count]


@pytest.mark.parametrize("mode", ["stream", "packet"])
@pytest.mark.parametrize(
    ("ring", "read_min", "write_min", "packet"), RINGS, ids=[r[0] for r in RINGS]
)
def test_c_to_c_both_directions(
    pipe_program: Path,
    rundir: Path,
    peers: list[Peer],
    ring: str,
    read_min: int,
    write_min: int,
    packet: int,
    mode: str,
) -> None:
    # Several times the larger ring each way, and not a multiple of anything, so the
    # indexes wrap repeatedly while both directions run at once.
    up = 3 * max(read_min, 2048) + 4099
    down = 3 * max(write_min, 2048) + 777
    framing = ["--packet", str(packet)] if mode == "packet" else []
    rings = ["--read-min", str(read_min), "--write-min", str(write_min)]
    server_args = [*rings, "--send", str(down), "--recv", str(up), *framing]
    client_args = ["--send", str(up), "--recv", str(down), *framing]
    server, client = channel(
        pipe_program, rundir, peers, f"{ring}-{mode}", server_args, client_args
    )
    at_server, at_client = transfer_digests(server), transfer_digests(client)
    assert server.finish() == 0, server.stderr()
    assert client.finish() == 0, client.stderr()
    assert_same_data(at_server["sent"], at_client["received"], down)
    assert_same_data(at_client["sent"], at_server["received"], up)


@pytest.mark.parametrize("framing", [[], ["--packet", "1001"]], ids=["stream", "packet"])
def test_sent_data_is_the_documented_stream(
    pipe_program: Path, rundir: Path, peers: list[Peer], framing: list[str]
) -> None:
    # 1001-byte packets cut the generator's 8-byte words: the stream must run on regardless.
    count = 100_003
    server, client = channel(
        pipe_program,
        rundir,
        peers,
        f"documented-{len(framing)}",
        ["--recv", str(count), *framing],
        ["--send", str(count), "--seed", "77", *framing],
    )
    expected = hashlib.sha256(xorshift_bytes(77, count)).hexdigest()
    assert digest_of(client.expect("sent")) == (count, expected)
    assert digest_of(server.expect("received")) == (count, expected)


@pytest.mark.parametrize("victim", ["client", "server"])
def test_sigkill_is_seen_by_the_peer(
    pipe_program: Path, rundir: Path, peers: list[Peer], victim: str
) -> None:
    server, client = channel(
        pipe_program,
        rundir,
        peers,
        f"kill-{victim}",
        ["--write-min", "65536", "--hold"],
        ["--hold"],
    )
    doomed, survivor = (client, server) if victim == "client" else (server, client)
    doomed.proc.send_signal(signal.SIGKILL)
    doomed.finish()
    survivor.expect("closed")
    assert survivor.finish() == 0, survivor.stderr()


def test_transfer_cut_by_sigkill_reports_early_close(
    pipe_program: Path, rundir: Path, peers: list[Peer]
) -> None:
    # The server expects more than the client will ever send; the client dies holding.
    server, client = channel(
        pipe_program, rundir, peers, "cut", ["--recv", str(1 << 30)], ["--send", "5000", "--hold"]
    )
    client.expect("sent")
    client.proc.kill()
    server.expect("closed")
    assert server.finish() == 3


def test_client_without_server_fails_at_once(
    pipe_program: Path, rundir: Path, peers: list[Peer]
) -> None:
    client = start(pipe_program, rundir, 2, ["client", "1", "/local/domain/1/nothing-here"])
    peers.append(client)
    assert client.finish() == 2
    assert "client init failed" in client.stderr()


def test_channels_release_everything(pipe_program: Path, rundir: Path, peers: list[Peer]) -> None:
    server, client = channel(
        pipe_program,
        rundir,
        peers,
        "release",
        ["--write-min", "1048576", "--send", "10", "--hold"],
        ["--recv", "10"],
    )
    assert server.finish() == 0 and client.finish() == 0
    state = wait_released(rundir)
    assert state["grants"] == [] and state["ports"] == []
    nodes = state["xenstore"]["nodes"]
    assert not any(path.startswith("/local/domain/1/data/vchan/2/release") for path in nodes)


def test_channel_outlives_the_hub(pipe_program: Path, peers: list[Peer]) -> None:
    # Data and events go process to process: once set up, a channel needs no hub.
    with foreground_hub() as (path, hub):
        server, client = channel(
            pipe_program,
            path,
            peers,
            "orphan",
            ["--write-min", "65536", "--send", "300000", "--recv", "200000", "--wait-go"],
            ["--send", "200000", "--recv", "300000", "--wait-go"],
        )
        hub.kill()
        hub.wait()
        server.go()
        client.go()
        at_server, at_client = transfer_digests(server), transfer_digests(client)
        assert_same_data(at_server["sent"], at_client["received"], 300000)
        assert_same_data(at_client["sent"], at_server["received"], 200000)
        assert server.finish() == 0 and client.finish() == 0
        assert "lost the hub connection" in server.stderr()  # close could not tell the hub
