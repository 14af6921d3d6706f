"""Faults inside an endpoint, on real event channels, pages and stores (memory backend):
what the tap does to notifications, what corruption writes; and a runner-side fault
acting on a real process through its target."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vchansim import layout
from vchansim.backends.memory import MemoryBackend, MemoryHypervisor
from vchansim.channel import Vchan
from vchansim.scenario import ScenarioError, parse_scenario
from vchansim.scenario.faults.corrupt import CorruptFault
from vchansim.scenario.faults.notify import NotifyFault
from vchansim.scenario.faults.pause import PauseFault
from vchansim.scenario.page import PAGE_FIELDS, set_indices
from vchansim.scenario.spec import Trigger
from vchansim.scenario.tap import EventTap, TappedBackend

PATH = "data/vchan/t"


def notify_fault(action: str, trigger: Trigger | None = None, **params) -> NotifyFault:
    return NotifyFault(endpoint="srv", trigger=trigger or Trigger(), action=action, **params)


def tap_of(faults: list[NotifyFault], seed: int) -> EventTap:
    """The tap of endpoint ``srv`` with ``faults``, seeded as a scenario would seed it."""
    return EventTap([f.event_rule(seed, "srv", i) for i, f in enumerate(faults)])


@pytest.fixture
def hv() -> MemoryHypervisor:
    return MemoryHypervisor()


@pytest.fixture
def ports(hv) -> Iterator[tuple]:
    """(server events handle, server port, client handle, client port), bound."""
    srv, cli = MemoryBackend(1, hypervisor=hv).events(), MemoryBackend(0, hypervisor=hv).events()
    sport = srv.bind_unbound(0)
    cport = cli.bind_interdomain(1, sport)
    assert wakeups(cli, cport) == 1  # a fresh interdomain port starts pending, once
    yield srv, sport, cli, cport
    srv.close()
    cli.close()


def wakeups(events, port: int, timeout: float = 0.0) -> int:
    """Events pending on ``port`` now (each one unmasked again, so latched ones count)."""
    n = 0
    while events.pending(timeout) == port:
        events.unmask(port)
        n += 1
        timeout = 0.0
    return n


def test_every_nth_notification_is_dropped(ports):
    srv, sport, cli, cport = ports
    tap = tap_of([notify_fault("drop", every=3)], 1)
    tapped = tap.wrap(srv)
    got = []
    for _ in range(9):
        tapped.notify(sport)
        got.append(wakeups(cli, cport))
    assert got == [1, 1, 0] * 3
    assert (tap.counts.notifies, tap.counts.delivered, tap.counts.tampered) == (9, 6, 3)


def test_probability_and_count_are_deterministic_per_seed():
    def decisions(seed: int) -> list[bool]:
        """Which of 40 notifications the rule takes (and drops: it sends nothing)."""
        tap = tap_of([notify_fault("drop", probability=0.5, count=5)], seed)
        taken = []
        for _ in range(40):
            rule = tap.claimant()
            if rule is not None:
                rule.tamper(lambda: None, lambda delay, send: None)
            taken.append(rule is not None)
        return taken

    first = decisions(7)
    assert first == decisions(7) and first != decisions(8)
    assert first.count(True) == 5  # capped by count


def test_duplicated_notifications_wake_the_peer_twice(ports):
    srv, sport, cli, cport = ports
    tapped = tap_of([notify_fault("duplicate")], 1).wrap(srv)
    tapped.notify(sport)
    assert wakeups(cli, cport) == 2


def test_delayed_notifications_arrive_late_not_never(ports):
    srv, sport, cli, cport = ports
    tapped = tap_of([notify_fault("delay", delay=0.05)], 1).wrap(srv)
    sent = time.monotonic()
    tapped.notify(sport)
    assert cli.pending(0) is None
    assert cli.pending(5.0) == cport
    assert time.monotonic() - sent >= 0.05
    tapped.close()


def test_spurious_events_come_unasked_once_their_trigger_fires(hv):
    fault = notify_fault("spurious", Trigger(after_sent=10), rate=200)
    tap = tap_of([fault], 1)
    srv = tap.wrap(MemoryBackend(1, hypervisor=hv).events())
    cli = MemoryBackend(0, hypervisor=hv).events()
    cport = cli.bind_interdomain(1, srv.bind_unbound(0))
    assert wakeups(cli, cport) == 1  # the bind's own event
    assert cli.pending(0.05) is None  # not yet active
    tap.activate(fault)
    assert cli.pending(5.0) == cport
    srv.close()
    cli.close()
    assert tap.counts.spurious >= 1 and tap.counts.notifies == 0


def test_a_tapped_backend_counts_a_whole_channel(hv):
    tap = EventTap()
    srv = Vchan.server(TappedBackend(MemoryBackend(1, hypervisor=hv), tap), 0, PATH)
    cli = Vchan.client(MemoryBackend(0, hypervisor=hv), 1, f"/local/domain/1/{PATH}")
    assert cli.data_ready() == 0  # asks the server for a kick on its next write
    srv.write(b"x" * 100)
    assert tap.counts.notifies == tap.counts.delivered == 1
    assert srv.wait(5.0)  # the client's connect kick, through the tapped handle
    assert tap.counts.wakeups == 1
    cli.close()
    srv.close()


def test_corrupting_an_index_makes_the_ring_look_full_not_larger(hv):
    srv = Vchan.server(MemoryBackend(1, hypervisor=hv), 0, PATH, 0, 4096, blocking=False)
    cli = Vchan.client(MemoryBackend(0, hypervisor=hv), 1, f"/local/domain/1/{PATH}")
    assert srv.write(b"a" * 100) == 100
    change = CorruptFault("cli", Trigger(), field="right.cons", add=2**31).apply(cli)
    assert change == {"field": "right.cons", "old": 0, "new": 2**31}
    assert srv.buffer_space() == 0 and srv.write(b"b") == 0  # sanitised: stalls, no overrun
    change = CorruptFault("srv", Trigger(), field="right_order", value=25).apply(srv)
    assert change["old"] == 12 and srv.write_ring.size == 4096  # orders are never re-read
    cli.close()
    srv.close()


def test_start_index_sets_all_four_indices_and_leaves_the_rings_empty(hv):
    srv = Vchan.server(MemoryBackend(1, hypervisor=hv), 0, PATH)
    set_indices(srv, 2**32 - 10)
    assert srv.read_ring.cons == srv.read_ring.prod == 2**32 - 10
    assert srv.write_ring.cons == srv.write_ring.prod == 2**32 - 10
    assert srv.data_ready() == 0 and srv.buffer_space() == srv.write_ring.size
    srv.close()


def test_the_page_fields_match_the_layout():
    assert PAGE_FIELDS["left.prod"] == (layout.LEFT_PROD, 4)
    assert PAGE_FIELDS["srv_notify"] == (layout.SRV_NOTIFY, 1)
    assert PAGE_FIELDS["right_order"] == (layout.RIGHT_ORDER, 2)


# -- a fault from outside a scenario: pause on a real process ---------------------------------


class ProcessTarget:
    """A RunnerTarget over any process: what a caller outside the runner provides."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.records: list[dict] = []
        self.due: list[tuple[float, object]] = []

    def record(self, **detail) -> None:
        self.records.append(detail)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def signal(self, signo: int) -> None:
        os.kill(self.pid, signo)

    def later(self, delay: float, action) -> None:
        self.due.append((delay, action))


def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat: T when stopped."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def wait_state(pid: int, wanted: set[str]) -> str:
    """The process's state once it is one of ``wanted`` (signals land asynchronously)."""
    deadline = time.monotonic() + 10
    while (state := process_state(pid)) not in wanted and time.monotonic() < deadline:
        os.sched_yield()
    return state


def test_pause_stops_the_process_and_resumes_it_after_its_duration():
    proc = subprocess.Popen(["sleep", "60"])
    try:
        target = ProcessTarget(proc.pid)
        PauseFault("cli", Trigger(at=0.1), duration=0.25).act_from_runner(target)
        assert target.records == [{}]
        assert wait_state(proc.pid, {"T"}) == "T"
        ((delay, resume),) = target.due
        assert delay == 0.25
        resume()
        assert wait_state(proc.pid, {"S", "R"}) in {"S", "R"}
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    ("fault", "endpoint", "message"),
    [
        ('at = 0.1\nduration = 0.2', '', r"backend 'memory' runs endpoints as threads"),
        ('after_sent = 10', 'backend = "shm"', r"cannot be triggered by after_sent"),
        ('at = 0.1\nduration = 20', 'backend = "shm"', r"duration: 20 s is not shorter"),
        ('at = 0.1', 'backend = "shm"\nkind = "program"', r"cli is a program"),
    ],
)
def test_pause_is_refused_where_it_cannot_act(fault, endpoint, message):
    text = (
        '[scenario]\nbackend = "memory"\n'
        '[endpoints.srv]\nrole = "server"\nbackend = "shm"\n[endpoints.srv.workload]\n'
        'send = 1000\n'
        f'[endpoints.cli]\nrole = "client"\n{endpoint}\n'
        f'[[faults]]\nkind = "pause"\nendpoint = "cli"\n{fault}\n'
        '[[expect]]\nkind = "delivered"\n'
    )
    if "backend" not in endpoint:
        text = text.replace('role = "server"\nbackend = "shm"', 'role = "server"')
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(text, source="t.toml")
