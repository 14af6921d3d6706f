"""vchansim's pytest plugin on ``--vchan-backend xen`` in dom0 (tools/xen-vm-test loads
the plugin with that option): the pair is two ends in this domain on the real devices,
no other domain is played, and the teardown leak check sees what a test holds
(``run_scenario`` on real Xen: test_real_scenarios.py).
"""

from __future__ import annotations

import threading

import pytest

from vchansim.channel import Vchan
from vchansim.errors import ConfigError
from vchansim.leaks import LeakKind

#: More than the pair's rings hold: a write of this much blocks until the peer reads.
CHUNK = 20_000


def test_pair_moves_more_than_a_ring_holds_both_ways(vchan_pair) -> None:
    server, client = vchan_pair
    client.write(b"ping")
    assert server.recv(4) == b"ping"
    got = bytearray()

    def drain() -> None:
        while len(got) < CHUNK:
            got.extend(client.read(CHUNK - len(got)))

    reader = threading.Thread(target=drain)
    reader.start()
    server.write(b"pong" * (CHUNK // 4))  # returns once the reader has drained the ring
    reader.join()
    assert got == b"pong" * (CHUNK // 4)


def test_both_ends_are_this_domain_and_no_other_is_played(vchan_env) -> None:
    assert vchan_env.backend == "xen"
    assert vchan_env.pair_domains() == (0, 0)
    with pytest.raises(ConfigError, match="runs in domain 0; it cannot act as domain 1"):
        vchan_env.domain(1)


def test_the_leak_check_sees_a_server_left_open(vchan_env) -> None:
    server = Vchan.server(vchan_env.domain(0), 0, "data/vchan/leaky")
    held = vchan_env.leaks()
    kinds = {leak.kind for leak in held}
    assert {LeakKind.GRANT, LeakKind.PORT, LeakKind.XENSTORE} <= kinds, held
    text = "\n".join(map(str, held))
    assert "is still open on /dev/xen/evtchn" in text and "maps granted pages" in text
    assert "/local/domain/0/data/vchan/leaky/ring-ref" in text
    server.close()
    assert vchan_env.leaks() == []  # and so the teardown's check passes
