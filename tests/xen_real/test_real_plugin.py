"""vchansim's pytest plugin on ``--vchan-backend xen`` in dom0 (tools/xen-vm-test loads
the plugin with that option): the pair is two ends in this domain on the real devices,
no other domain is played, the teardown leak check sees what a test holds, and
``run_scenario`` runs scenarios on real Xen.
"""

from __future__ import annotations

import signal
import threading

import pytest

from vchansim.channel import Vchan
from vchansim.errors import ConfigError
from vchansim.leaks import LeakKind
from vchansim.scenario.xen_executor import XEN_DEVICES

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


def test_run_scenario_runs_on_real_xen_and_skips_what_is_not_applicable(run_scenario) -> None:
    result = run_scenario("kill-server")  # fails the test unless every verdict held
    assert {result.scenario.server.backend, result.scenario.client.backend} == {"xen"}
    server = next(i for i in result.record.instances if i.name == "server")
    assert server.exitcode == -signal.SIGKILL and XEN_DEVICES.is_dir()
    with pytest.raises(pytest.skip.Exception, match="is a program endpoint"):
        run_scenario("c-client")
    unchecked = run_scenario("grant-exhaustion", check=False)
    assert unchecked.status == "not-applicable" and not unchecked.passed
