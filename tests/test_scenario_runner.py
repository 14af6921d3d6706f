"""The runner: endpoints in processes (shm) or threads (memory), faults from outside and
inside, the global deadline, results collected from endpoints that died, and verdicts
that follow from what happened."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from vchansim.scenario import Scenario, parse_scenario, run_scenario
from vchansim.scenario.endpoint import EndpointJob
from vchansim.scenario.executors import ShmBackends
from vchansim.scenario.expectations.clean import Clean
from vchansim.scenario.expectations.close_seen import CloseSeen
from vchansim.scenario.expectations.delivered import Delivered
from vchansim.scenario.expectations.integrity import Integrity
from vchansim.scenario.messages import FaultFired, Progress, ReceivedReport, Result, Started
from vchansim.scenario.records import Instance, RunRecord
from vchansim.scenario.spawned import Spawned
from vchansim.scenario.streams import digest
from vchansim.scenario.verdicts import judge


def scenario(text: str, backend: str = "memory", **head: Any) -> Scenario:
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in head.items())
    return parse_scenario(f'[scenario]\nname = "t"\nbackend = "{backend}"\n{extra}{text}')


STREAM = """
[endpoints.srv]
role = "server"
write_min = 4096
read_min = 2048
[endpoints.srv.workload]
send = 300_000
write_size = [1, 7000]
read_size = [1, 3000]
[endpoints.cli]
role = "client"
[endpoints.cli.workload]
send = 100_000
write_size = [1, 5000]
read_size = [1, 9000]
[[expect]]
kind = "delivered"
[[expect]]
kind = "clean"
[[expect]]
kind = "no_leaks"
"""


def reports(result, side: str) -> dict[str, tuple]:
    return {
        i.name: (getattr(i.result, side)["count"], getattr(i.result, side)["sha256"])
        for i in result.record.instances
        if i.result and getattr(i.result, side)
    }


def test_a_run_is_reproducible_from_its_seed():
    first = run_scenario(scenario(STREAM, seed=5))
    again = run_scenario(scenario(STREAM, seed=5))
    other = run_scenario(scenario(STREAM, seed=6))
    assert first.passed and again.passed and other.passed
    assert reports(first, "received") == reports(again, "received")
    assert reports(first, "received") != reports(other, "received")
    assert reports(first, "received")["cli"] == (300_000, digest(5, "srv", 0, 300_000))


def test_endpoints_over_shm_are_separate_processes_and_leave_nothing():
    result = run_scenario(scenario(STREAM, backend="shm"))
    assert result.passed, result.summary()
    pids = {i.pid for i in result.record.instances}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(i.exitcode == 0 for i in result.record.instances)
    assert result.record.leaks == []


def test_an_endpoint_process_holds_none_of_the_runners_descriptors(tmp_path):
    """Endpoints are forks of the fork server, not of the runner: a descriptor the runner
    holds (here a file; in a run its hub socket or Xen devices) is not in the endpoint,
    so its death is its own.  It says it started, waits for the runner's go, and is
    killed waiting."""
    spawner = Spawned()
    runner_only = tmp_path / "runner-only"
    with runner_only.open("w"):
        job = EndpointJob(scenario(STREAM, backend="shm"), "srv", ShmBackends(str(tmp_path)))
        conn, proc, pid = spawner.start(job)
        try:
            started = conn.recv()
            assert isinstance(started, Started) and started.pid == pid
            fds = Path(f"/proc/{pid}/fd")
            held = {os.readlink(fd) for fd in fds.iterdir()}
            assert str(runner_only) not in held and pid != os.getpid()
            assert os.getpid() not in parents(pid)[:1]  # forked by the server, not by us
        finally:
            spawner.kill(proc)
    assert spawner.reap(proc) == -signal.SIGKILL
    with pytest.raises(EOFError):  # its end of the link went with it
        conn.recv()


def parents(pid: int) -> list[int]:
    """``pid``'s parent, its parent's parent, ... up to init."""
    chain = []
    while pid > 1:
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


KILLED = """
[endpoints.srv]
role = "server"
write_min = 8192
[endpoints.srv.workload]
send = 1_000_000_000
write_size = 65536
[endpoints.cli]
role = "client"
[endpoints.cli.workload]
read_size = 4096
read_pause = 0.001
[[faults]]
kind = "kill"
endpoint = "cli"
at = 0.2
[[expect]]
kind = "error"
endpoint = "srv"
error = "ChannelClosed"
[[expect]]
kind = "close_seen"
endpoint = "srv"
within_ms = 1000
[[expect]]
kind = "integrity"
"""


def test_a_killed_endpoint_still_counts_through_what_it_reported():
    result = run_scenario(scenario(KILLED, backend="shm", deadline=20))
    assert result.passed, result.summary()
    srv, cli = result.record.instances
    assert cli.killed == "fault" and cli.exitcode == -signal.SIGKILL and cli.result is None
    assert cli.progress.received > 0 and cli.progress.mismatch_at is None
    assert srv.result is not None and srv.result.error["type"] == "ChannelClosed"
    assert srv.result.sent["count"] >= cli.progress.received


HUNG = """
[endpoints.srv]
role = "server"
write_min = 4096
timeout = 60
[endpoints.srv.workload]
send = 1_000_000
[endpoints.cli]
role = "client"
timeout = 60
[endpoints.cli.workload]
read_size = 512
[[faults]]
kind = "corrupt"
endpoint = "cli"
field = "right.cons"
add = 2147483648
after_received = 8192
[[expect]]
kind = "no_hang"
"""


def test_the_global_deadline_kills_what_hangs_and_fails_the_run():
    result = run_scenario(scenario(HUNG, backend="shm", deadline=1.5))
    assert not result.passed
    assert {v.kind for v in result.failures} == {"no_hang", "deadline"}
    assert all(i.killed == "deadline" for i in result.record.instances)
    for inst in result.record.instances:
        with pytest.raises(ProcessLookupError):
            os.kill(inst.pid, 0)  # reaped, not merely killed
    assert result.record.duration < 10  # the endpoints alone would have run for 60 s


RESTART = """
[endpoints.srv]
role = "server"
persist = true
write_min = 4096
[endpoints.srv.workload]
mode = "packets"
send = 60_000
write_size = [1, 1000]
[endpoints.cli]
role = "client"
[endpoints.cli.workload]
mode = "packets"
send = 40_000
write_size = [1, 2000]
[[faults]]
kind = "restart"
endpoint = "cli"
after_sent = 20_000
[[expect]]
kind = "delivered"
[[expect]]
kind = "clean"
"""


@pytest.mark.parametrize("backend", ["memory", "shm"])
def test_a_restarted_client_resumes_both_streams_at_the_ring_indices(backend):
    result = run_scenario(scenario(RESTART, backend=backend))
    assert result.passed, result.summary()
    first, second = (i for i in result.record.instances if i.name == "cli")
    for side in ("sent", "received"):
        before, after = getattr(first.result, side), getattr(second.result, side)
        assert after["start"] == before["start"] + before["count"] > 0
    assert first.result.sent["count"] >= 20_000


def test_a_failed_server_aborts_the_waiting_client():
    text = STREAM.replace('role = "server"', 'role = "server"\npath = "data/x"')
    text += '[[faults]]\nkind = "exhaust"\nendpoint = "srv"\nresource = "grants"\n'
    result = run_scenario(scenario(text))
    srv, cli = result.record.instances
    assert srv.result.error["errno"] == "ENOSPC"
    assert cli.result.stopped.startswith("not started") and cli.result.error is None
    assert "cli#1 not started" in next(v.detail for v in result.verdicts if v.kind == "clean")


# -- verdicts from hand-made records: each rule on its own -------------------------------------


def record(s: Scenario, *instances: Instance) -> RunRecord:
    return RunRecord(s, t0=0.0, instances=list(instances), duration=1.0)


def inst(name: str, number: int = 1, **fields: Any) -> Instance:
    return Instance(name, number, conn=None, handle=None, started=0.0, ended=1.0, **fields)


def result(sent=None, received=None, error=None) -> Result:
    return Result(sent=sent, received=received, error=error)


def segment(stream: str, start: int, count: int, seed: int = 0) -> ReceivedReport:
    return {
        "stream": stream,
        "start": start,
        "count": count,
        "sha256": digest(seed, stream, start, count),
        "mismatch_at": None,
        "closed": False,
    }


ONE_WAY = scenario(
    '[endpoints.s]\nrole = "server"\n[endpoints.s.workload]\nsend = 5000\n'
    '[endpoints.c]\nrole = "client"\n[[expect]]\nkind = "delivered"\n'
)


def test_delivered_needs_every_byte_in_order_and_the_right_digest():
    sent = inst("s", result=result(sent=segment("s", 0, 5000)))
    good = inst("c", result=result(received=segment("s", 0, 5000)))
    assert judge(record(ONE_WAY, sent, good))[0].passed
    short = inst("c", result=result(received=segment("s", 0, 4000)))
    assert "s sent 5000 bytes, c received 4000" in judge(record(ONE_WAY, sent, short))[0].detail
    bad = inst("c", result=result(received={**segment("s", 0, 5000), "sha256": "0" * 64}))
    assert "differ from s's stream" in judge(record(ONE_WAY, sent, bad))[0].detail
    first = inst("c", 1, result=result(received=segment("s", 0, 2000)))
    gap = inst("c", 2, result=result(received=segment("s", 3000, 2000)))
    assert "bytes 2000..3000 unaccounted" in judge(record(ONE_WAY, sent, first, gap))[0].detail


def test_a_self_killed_sender_is_exact_a_runner_killed_one_is_not():
    s = scenario(
        '[endpoints.s]\nrole = "server"\n[endpoints.s.workload]\nsend = 5000\n'
        '[endpoints.c]\nrole = "client"\n[[expect]]\nkind = "delivered"\n'
        '[[faults]]\nkind = "kill"\nendpoint = "s"\nafter_sent = 3000\n',
        backend="shm",
    )
    fired = FaultFired(index=0, fault=s.faults[0].describe(), kind="kill", sent=3000, t=0.5)
    by_self = inst("s", faults=[fired])
    got = inst("c", result=result(received=segment("s", 0, 3000)))
    assert judge(record(s, by_self, got))[0].passed
    by_runner = inst("s", killed="fault", times={"killed": 0.5})
    assert "died without a byte-exact record" in judge(record(s, by_runner, got))[0].detail


def test_integrity_catches_a_wrong_byte_even_from_a_dead_receiver():
    s = replace(ONE_WAY, expectations=(Integrity(),))
    progress = Progress(sent=0, received=900, mismatch_at=812, events={})
    dead = inst("c", killed="fault", progress=progress)
    verdict = judge(record(s, inst("s"), dead))[0]
    assert not verdict.passed and "offset 812" in verdict.detail


def test_close_seen_measures_from_the_peer_s_close_and_needs_one():
    s = replace(ONE_WAY, expectations=(CloseSeen("c", within_ms=50),))
    srv = inst("s", times={"closing": 10.0})
    fast = inst("c", times={"peer_closed": 10.02})
    assert judge(record(s, srv, fast))[0].detail == "seen after 20.0 ms (limit 50 ms)"
    slow = inst("c", times={"peer_closed": 10.2})
    assert not judge(record(s, srv, slow))[0].passed
    phantom = inst("c", times={"peer_closed": 9.0})
    assert "never made" in judge(record(s, srv, phantom))[0].detail


def test_an_endpoint_that_vanished_without_a_fault_is_a_crash():
    s = replace(ONE_WAY, expectations=(Clean(("s", "c")),))
    verdicts = judge(record(s, inst("s", result=result()), inst("c", exitcode=-11)))
    assert [(v.kind, v.passed) for v in verdicts] == [("clean", False), ("crash", False)]
    assert "exit code -11" in verdicts[1].detail


def test_a_deadline_hit_is_always_a_failure():
    rec = record(replace(ONE_WAY, expectations=(Delivered(),)))
    rec.deadline_hit = True
    assert [v.kind for v in judge(rec) if not v.passed] == ["delivered", "deadline"]


def test_faults_that_never_fire_are_noted_not_silently_skipped():
    text = STREAM + (
        '[[faults]]\nkind = "stall"\nendpoint = "cli"\nafter_received = 999999999\n'
        '[[faults]]\nkind = "kill"\nendpoint = "srv"\nat = 60\n'
    )
    result = run_scenario(scenario(text, backend="shm"))
    assert result.passed, result.summary()
    assert result.record.notes == [
        "stall cli after 999999999 bytes received: never fired, cli ended first",
        "kill srv at 60 s: never fired, the run ended first",
    ]
    assert "note: kill srv at 60 s: never fired" in result.summary()
