"""Byte compatibility of the Python ring and Debian's libxenvchan, cell by cell.

Every pairing of a Python endpoint (``tests/interop_peer.py``) and a C endpoint
(``csrc/programs/vchan-pipe.c`` on Debian's libxenvchan with the drop-in libraries) is run as
server and client, over each of libxenvchan's ring placements, in stream and packet mode:
64 MiB of seeded random data each way at once, each endpoint its own process in its own
emulated domain.  Each side hashes what it sends and what it receives; the cell passes
when both directions' SHA-256 agree.  The throughput of every cell is printed at the end.

A Python endpoint on the Python core (``VCHANSIM_PURE=1``) is paired the same way with one
on the C accelerator and with libxenvchan.

Then a SIGKILL of either language's endpoint must be seen by the other: ``closed``, with
``is_open() == 0`` and a read raising ChannelClosed on the Python side, within a bound.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.clibs import NEEDS_CLIBS, RINGS, wait_released
from helpers.interop import (
    KILL_BOUND,
    PYTHON_PEER,
    Endpoint,
    Transfers,
    start,
)

from vchansim.core import PURE_ENV

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64 << 20
SERVER_DOMID, CLIENT_DOMID = 1, 2
KINDS = ("python", "c")

pytestmark = [pytest.mark.cbuild, NEEDS_CLIBS]


@dataclass
class Summary:
    """What the module measured, shown after its last test."""

    #: cell name -> (MB/s server to client, MB/s client to server)
    throughput: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: one line per SIGKILL test
    kills: list[str] = field(default_factory=list)

    def lines(self) -> Iterator[str]:
        if self.throughput:
            yield f"interop matrix, {SIZE >> 20} MiB each way at once, MB/s:"
            yield f"  {'server client ring mode':36} {'s->c':>6} {'c->s':>6}"
            for name, (down, up) in self.throughput.items():
                yield f"  {name:36} {down:6.0f} {up:6.0f}"
        yield from self.kills


@pytest.fixture(scope="module")
def summary(request: pytest.FixtureRequest) -> Iterator[Summary]:
    """Collects measurements; prints them past output capture, as capsys.disabled() does."""
    collected = Summary()
    yield collected
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        for line in collected.lines():
            reporter.write_line(line)


def peer_command(kind: str, pipe_program: Path) -> list[str]:
    """How to run an endpoint of ``kind``: the C program, or the Python script (on the
    Python core for ``pure``)."""
    if kind == "c":
        return [str(pipe_program)]
    pure = ["env", f"{PURE_ENV}=1"] if kind == "pure" else []
    return [*pure, *PYTHON_PEER]


def open_channel(
    kinds: tuple[str, str],
    hub_dir: Path,
    program: Path,
    endpoints: list[Endpoint],
    name: str,
    server_args: Sequence[str],
    client_args: Sequence[str],
) -> tuple[Endpoint, Endpoint]:
    """A server of kinds[0] in domain 1 for domain 2, and once it listens a client of
    kinds[1] in domain 2."""
    path = f"/local/domain/{SERVER_DOMID}/data/vchan/{CLIENT_DOMID}/{name}"
    server_command, client_command = (peer_command(kind, program) for kind in kinds)
    server = start(server_command, hub_dir, SERVER_DOMID, ["server", "2", path, *server_args])
    endpoints.append(server)
    server.expect("ready")
    client = start(client_command, hub_dir, CLIENT_DOMID, ["client", "1", path, *client_args])
    endpoints.append(client)
    client.expect("ready")
    return server, client


def checked_transfers(
    server: Endpoint, client: Endpoint, count: int
) -> tuple[Transfers, Transfers]:
    """Both ends' reports, checked: each end received exactly what the other sent."""
    at_server, at_client = server.transfers(), client.transfers()
    # count and SHA-256 of what one end sent are those of what the other received
    assert at_server["sent"][:2] == at_client["received"][:2]
    assert at_client["sent"][:2] == at_server["received"][:2]
    assert at_server["sent"][0] == at_client["sent"][0] == count
    assert at_server["sent"][1] != at_client["sent"][1]  # the two directions are distinct
    return at_server, at_client


def assert_released(hub_dir: Path, name: str) -> None:
    """Both ends closed cleanly: no grant, port or XenStore node of the channel is left."""
    state = wait_released(hub_dir)
    assert state["grants"] == [] and state["ports"] == []
    nodes = state["xenstore"]["nodes"]  # type: ignore[index]
    assert not [path for path in nodes if path.endswith(f"/{name}") or f"/{name}/" in path]


@pytest.mark.parametrize("mode", ["stream", "packet"])
@pytest.mark.parametrize(
    ("ring", "read_min", "write_min", "packet"), RINGS, ids=[r[0] for r in RINGS]
)
@pytest.mark.parametrize("client_kind", KINDS)
@pytest.mark.parametrize("server_kind", KINDS)
def test_cell(
    hub_dir: Path,
    pipe_program: Path,
    endpoints: list[Endpoint],
    summary: Summary,
    server_kind: str,
    client_kind: str,
    ring: str,
    read_min: int,
    write_min: int,
    packet: int,
    mode: str,
) -> None:
    framing = ["--packet", str(packet)] if mode == "packet" else []
    both_ways = ["--send", str(SIZE), "--recv", str(SIZE), *framing]
    rings = ["--read-min", str(read_min), "--write-min", str(write_min)]
    name = f"{server_kind}-{client_kind}-{ring}-{mode}"
    kinds = (server_kind, client_kind)
    server_args = [*rings, *both_ways]
    server, client = open_channel(
        kinds, hub_dir, pipe_program, endpoints, name, server_args, both_ways
    )
    at_server, at_client = checked_transfers(server, client, SIZE)
    assert server.finish() == 0, server.stderr()
    assert client.finish() == 0, client.stderr()
    assert_released(hub_dir, name)
    summary.throughput[f"{server_kind} {client_kind} {ring} {mode}"] = (
        SIZE / 1e6 / at_client["received"][2],
        SIZE / 1e6 / at_server["received"][2],
    )


@pytest.mark.parametrize("mode", ["stream", "packet"])
@pytest.mark.parametrize("other", ["python", "c"])
@pytest.mark.parametrize("pure_role", ["server", "client"])
def test_python_core_cell(
    hub_dir: Path,
    pipe_program: Path,
    endpoints: list[Endpoint],
    summary: Summary,
    pure_role: str,
    other: str,
    mode: str,
) -> None:
    """The Python core against the accelerator and libxenvchan, over a multi-page ring."""
    _ring, read_min, write_min, packet = RINGS[2]
    framing = ["--packet", str(packet)] if mode == "packet" else []
    both_ways = ["--send", str(SIZE // 4), "--recv", str(SIZE // 4), *framing]
    kinds = ("pure", other) if pure_role == "server" else (other, "pure")
    name = f"{kinds[0]}-{kinds[1]}-{mode}"
    rings = ["--read-min", str(read_min), "--write-min", str(write_min)]
    server, client = open_channel(
        kinds, hub_dir, pipe_program, endpoints, name, [*rings, *both_ways], both_ways
    )
    pure, peer = (server, client) if pure_role == "server" else (client, server)
    assert pure.lines[0] == "ready core=python"
    if other == "python":
        assert peer.lines[0] == "ready core=c"
    at_server, at_client = checked_transfers(server, client, SIZE // 4)
    assert server.finish() == 0, server.stderr()
    assert client.finish() == 0, client.stderr()
    assert_released(hub_dir, name)
    summary.throughput[f"{kinds[0]} {kinds[1]} multi-page {mode} 16MiB"] = (
        SIZE / 4e6 / at_client["received"][2],
        SIZE / 4e6 / at_server["received"][2],
    )


def survivor_role(victim_role: str) -> str:
    return "client" if victim_role == "server" else "server"


@pytest.mark.parametrize("victim_role", ["server", "client"])
@pytest.mark.parametrize("victim_kind", KINDS)
def test_sigkill_is_seen_across_languages(
    hub_dir: Path,
    pipe_program: Path,
    endpoints: list[Endpoint],
    summary: Summary,
    victim_kind: str,
    victim_role: str,
) -> None:
    survivor_kind = "c" if victim_kind == "python" else "python"
    if victim_role == "server":
        kinds = (victim_kind, survivor_kind)
    else:
        kinds = (survivor_kind, victim_kind)
    count = 100_000
    traffic = ["--send", str(count), "--recv", str(count), "--hold"]
    name = f"kill-{victim_kind}-{victim_role}"
    server_args = ["--write-min", "65536", *traffic]
    server, client = open_channel(
        kinds, hub_dir, pipe_program, endpoints, name, server_args, traffic
    )
    checked_transfers(server, client, count)  # the channel works before the kill
    victim, survivor = (server, client) if victim_role == "server" else (client, server)
    killed_at = time.monotonic()
    victim.proc.send_signal(signal.SIGKILL)
    seen = survivor.expect("closed", KILL_BOUND)
    latency = time.monotonic() - killed_at
    summary.kills.append(
        f"SIGKILL of the {victim_kind} {victim_role} seen by the {survivor_kind} "
        f"{survivor_role(victim_role)} after {latency * 1e3:.1f} ms"
    )
    if survivor_kind == "python":
        assert seen == ["is_open=0", "read=ChannelClosed"]
    assert survivor.finish() == 0, survivor.stderr()
    assert victim.finish() == -signal.SIGKILL
    state = wait_released(hub_dir)  # the killed end's grants and ports went with it
    assert state["grants"] == [] and state["ports"] == []
