"""The spin policy: settings, budgets, and that spinning keeps the notify protocol whole."""

from __future__ import annotations

import threading

import pytest

from vchansim.backends.memory import MemoryBackend, MemoryHypervisor
from vchansim.channel import Vchan
from vchansim.errors import ConfigError
from vchansim.spin import ADAPTIVE_MAX_US, SpinPolicy


def test_settings_and_bad_values():
    assert SpinPolicy().setting == "off" and SpinPolicy().budget_us == 0
    assert SpinPolicy(25).budget_us == 25.0
    assert SpinPolicy("adaptive").setting == "adaptive"
    for bad in (-1, "fast", True, None):
        with pytest.raises(ConfigError, match="spin must be"):
            SpinPolicy(bad)  # type: ignore[arg-type]


def test_off_never_polls_and_fixed_budget_polls_until_ready():
    calls = []
    assert SpinPolicy("off").spin(lambda: calls.append(1) or True) is False
    assert calls == []
    countdown = iter([False, False, True])
    assert SpinPolicy(1e6).spin(lambda: next(countdown)) is True
    assert SpinPolicy(0.5).spin(lambda: False) is False  # gives up after its budget


def test_adaptive_budget_follows_observed_waits():
    policy = SpinPolicy("adaptive")
    for _ in range(100):
        policy.observe(10.0)  # a peer that answers in ~10 µs: spin ~20 µs
    assert 15 < policy.budget_us < 25
    for _ in range(100):
        policy.observe(5000.0)  # a slow peer: spinning would only burn CPU
    assert policy.budget_us == 0
    for _ in range(100):
        policy.observe(10.0)  # it speeds up again and spinning comes back
    assert 0 < policy.budget_us <= ADAPTIVE_MAX_US


@pytest.mark.parametrize("spin", ["off", "adaptive", 200.0])
def test_every_spin_setting_delivers_everything_through_a_tiny_ring(spin):
    hv = MemoryHypervisor()
    srv = Vchan.server(MemoryBackend(1, hypervisor=hv), 0, "data/spin", 1024, 1024)
    cli = Vchan.client(MemoryBackend(0, hypervisor=hv), 1, "/local/domain/1/data/spin")
    srv.spin = cli.spin = spin
    payload = bytes(range(256)) * 2048
    got = bytearray()
    reader = threading.Thread(target=lambda: got.extend(b"".join(iter(srv))))
    reader.start()
    assert cli.write(payload) == len(payload)
    cli.close()
    reader.join()
    assert got == payload
    srv.close()
