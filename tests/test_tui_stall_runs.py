"""Stalls that scenario faults produce for real, flagged by name -- in the replay of the
run's trace, and live by an inspector attached to the running scenario's hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from vchansim.scenario import parse_scenario, run_scenario
from vchansim.tui.playback import ReplaySource

#: The server drops every notification it sends: the client, blocked in read, sleeps
#: through each write until its liveness re-check.
LOST_WAKEUPS = """
[scenario]
name = "lost-wakeups"
seed = 3
deadline = 60

[endpoints.server]
role = "server"
write_min = 4096

[endpoints.server.workload]
send = 65_536
write_size = 8192

[endpoints.client]
role = "client"

[endpoints.client.workload]
read_size = 2048

[[faults]]
kind = "notify"
endpoint = "server"
action = "drop"

[[expect]]
kind = "delivered"
"""

#: The client stops reading for a second: the server's blocking writes fill the ring and
#: wait for room nobody makes.
CONSUMER_STALL = """
[scenario]
name = "consumer-stall"
seed = 4
deadline = 60

[endpoints.server]
role = "server"
write_min = 4096

[endpoints.server.workload]
send = 65_536
write_size = 4096

[endpoints.client]
role = "client"

[endpoints.client.workload]
read_size = 1024

[[faults]]
kind = "stall"
endpoint = "client"
after_received = 8192
duration = 1.0

[[expect]]
kind = "delivered"
"""

CASES = [(LOST_WAKEUPS, "lost-wakeup"), (CONSUMER_STALL, "consumer-stalled")]


def flagged(source: ReplaySource) -> dict[str, float]:
    """Each verdict name the replay shows, with the trace time it first shows it."""
    first: dict[str, float] = {}
    for frame in source.frames:
        for stall in frame.stalls:
            first.setdefault(stall.name, frame.time)
    return first


@pytest.mark.parametrize(("text", "name"), CASES, ids=[name for _, name in CASES])
def test_the_replay_of_a_run_flags_the_stall_its_fault_causes(
    tmp_path: Path, text: str, name: str
) -> None:
    trace = tmp_path / "run.jsonl"
    result = run_scenario(parse_scenario(text), trace=trace)
    assert result.passed, result.verdicts
    source = ReplaySource.open(trace)
    names = flagged(source)
    assert name in names, f"flagged: {names}"
    # Only that stall: a fault of one kind is not reported as another.
    assert set(names) == {name}
