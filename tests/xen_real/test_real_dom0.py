"""dom0 <-> dom0 vchans on a real hypervisor: vchansim's xen backend and Xen's C
libxenvchan, in every pairing of roles, moving data both ways.

Each test starts two peers (tests/xen_real/pypeer.py forked, or the C vchan-peer) in
separate processes of dom0; the server offers the channel to domain 0 itself.  Stream
tests check every byte against the shared test pattern; round trips compare SHA-256.
"""

from __future__ import annotations

import pytest

IMPLS = ("python", "c")
STREAM_BYTES = 4 << 20
STREAM_RING = 64 << 10
PINGS = 200


@pytest.mark.parametrize("client_impl", IMPLS)
@pytest.mark.parametrize("server_impl", IMPLS)
@pytest.mark.parametrize("direction", ["client_to_server", "server_to_client"])
def test_stream_arrives_intact(start, record, xs_path, direction, server_impl, client_impl):
    to_server = direction == "client_to_server"
    server = start(
        server_impl,
        "-s",
        STREAM_RING,
        "server",
        0,
        xs_path,
        "sink" if to_server else "source",
        STREAM_BYTES,
    )
    client = start(
        client_impl, "-w", 30, "client", 0, xs_path, "source" if to_server else "sink", STREAM_BYTES
    )
    reports = server.result(), client.result()
    record(*reports)
    assert all(r["bytes"] == STREAM_BYTES for r in reports)


@pytest.mark.parametrize("client_impl", IMPLS)
@pytest.mark.parametrize("server_impl", IMPLS)
def test_ping_comes_back(start, record, xs_path, server_impl, client_impl):
    server = start(server_impl, "server", 0, xs_path, "echo")
    client = start(client_impl, "-w", 30, "client", 0, xs_path, "ping", PINGS, 1)
    reports = server.result(), client.result()
    record(*reports)
    assert reports[1]["bytes"] == 2 * PINGS
    assert reports[1]["rtt_us"] > 0


@pytest.mark.parametrize("echo_impl", IMPLS)
@pytest.mark.parametrize("python_role", ["client", "server"])
def test_python_end_gets_its_bytes_back(start, record, xs_path, python_role, echo_impl):
    """Both directions at once through one channel, checked by SHA-256.  The rings are the
    streams' (64 KiB): with the default ones' 1 and 2 KiB every few KiB waits a round trip
    between the ends, which under an emulated CPU makes a megabyte take a minute."""
    total = 1 << 20
    if python_role == "server":
        server = start("python", "-s", STREAM_RING, "server", 0, xs_path, "roundtrip", total)
        client = start(echo_impl, "-w", 30, "client", 0, xs_path, "echo")
    else:
        server = start(echo_impl, "-s", STREAM_RING, "server", 0, xs_path, "echo")
        client = start("python", "-w", 30, "client", 0, xs_path, "roundtrip", total)
    reports = server.result(), client.result()
    record(*reports)
    assert len(next(r for r in reports if r["mode"] == "roundtrip")["sha256"]) == 64


@pytest.mark.parametrize(("server_impl", "client_impl"), [("python", "c"), ("c", "python")])
def test_megabyte_rings_map_256_grants_each_way(start, record, xs_path, server_impl, client_impl):
    """The largest rings: 2 x 256 granted pages, all in one gntalloc/gntdev call each."""
    server = start(server_impl, "-s", 1 << 20, "server", 0, xs_path, "sink", STREAM_BYTES)
    client = start(client_impl, "-w", 30, "client", 0, xs_path, "source", STREAM_BYTES)
    record(server.result(), client.result())
