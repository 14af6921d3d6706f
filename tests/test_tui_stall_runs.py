"""Stalls that scenario faults produce for real, flagged by name within a second: in the
replay of the run's trace, and live by the inspector attached to the running scenario."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from vchansim.rundir import prepare_rundir
from vchansim.scenario import parse_scenario, run_scenario
from vchansim.trace import read_trace
from vchansim.tui.app import InspectorApp
from vchansim.tui.frames import Frame
from vchansim.tui.playback import ReplaySource
from vchansim.tui.screens.live import LiveScreen

#: A stall is flagged within this many seconds of the fault that causes it.
ARISES = 1.0

#: The server drops every notification it sends, and pauses after each write so that the
#: client drains the ring and sleeps reading it: each later write takes the client's
#: WRITE request without the event, and the client sleeps through it until its liveness
#: re-check.  (Without the pause a client that is scheduled late finds data at every
#: read, never sleeps, and no wake-up is owed.)
LOST_WAKEUPS = """
[scenario]
name = "lost-wakeups"
seed = 3
deadline = 60

[endpoints.server]
role = "server"

[endpoints.server.workload]
send = 8192
write_size = 2048
write_pause = 0.3

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

#: A slow reader: each of its reads frees room the blocked server refills at once, then
#: it pauses while the server sleeps on a full ring again.  SLOW_READER plus two faults
#: at the same byte gives the two hangs a hostile client can cause that way.
SLOW_READER = """
[scenario]
name = "{name}"
seed = 5
deadline = 60

[endpoints.server]
role = "server"
write_min = 4096

[endpoints.server.workload]
send = 16384
write_size = 8192

[endpoints.client]
role = "client"

[endpoints.client.workload]
read_size = 2048
read_pause = 0.2
"""

#: The client clears the READ request the sleeping server left in its notify byte, then
#: stops reading: the server sleeps on a full ring with nothing asked of anyone.
UNASKED_WAIT = (
    SLOW_READER.format(name="unasked-wait")
    + """
[[faults]]
kind = "corrupt"
endpoint = "client"
after_received = 4096
field = "cli_notify"
value = 0

[[faults]]
kind = "stall"
endpoint = "client"
after_received = 4096
duration = 1.0

[[expect]]
kind = "delivered"
"""
)

#: The client clears its live byte without the event a close sends, then stops reading:
#: the server sleeps on after its peer "closed", until its liveness re-check.
MISSED_CLOSE = (
    SLOW_READER.format(name="missed-close")
    + """
[[faults]]
kind = "corrupt"
endpoint = "client"
after_received = 4096
field = "cli_live"
value = 0

[[faults]]
kind = "stall"
endpoint = "client"
after_received = 4096
duration = 1.0

[[expect]]
kind = "close_seen"
endpoint = "server"
"""
)

#: Both ends stop reading while both send: both rings fill and each end sleeps for the
#: room only the other can make.
DEADLOCK = """
[scenario]
name = "deadlock"
seed = 6
deadline = 60

[endpoints.server]
role = "server"
read_min = 4096
write_min = 4096

[endpoints.server.workload]
send = 65536
write_size = 4096
read_size = 4096

[endpoints.client]
role = "client"

[endpoints.client.workload]
send = 65536
write_size = 4096
read_size = 4096

[[faults]]
kind = "stall"
endpoint = "client"
after_received = 8192
duration = 1.0

[[faults]]
kind = "stall"
endpoint = "server"
after_received = 8192
duration = 1.0

[[expect]]
kind = "delivered"
"""

#: (scenario, the verdict its fault must produce, the others it may also produce: a
#: reader that stalls on purpose is a consumer-stalled writer's peer before and after; a
#: reader sleeping through dropped wake-ups lets the ring fill under its writer, and sleeps
#: through the server's close too when that event is the one dropped).
CASES = [
    (LOST_WAKEUPS, "lost-wakeup", {"consumer-stalled", "missed-close"}),
    (CONSUMER_STALL, "consumer-stalled", set()),
    (UNASKED_WAIT, "unasked-wait", {"consumer-stalled", "lost-wakeup"}),
    (MISSED_CLOSE, "missed-close", {"consumer-stalled"}),
    (DEADLOCK, "deadlock", {"consumer-stalled"}),
]


def flagged(source: ReplaySource) -> dict[str, float]:
    """Each verdict name the replay shows, with the trace time it first shows it."""
    first: dict[str, float] = {}
    for frame in source.frames:
        for stall in frame.stalls:
            first.setdefault(stall.name, frame.time)
    return first


@pytest.mark.parametrize(("text", "name", "also"), CASES, ids=[case[1] for case in CASES])
def test_the_replay_of_a_run_flags_the_stall_its_fault_causes(
    tmp_path: Path, text: str, name: str, also: set[str]
) -> None:
    trace = tmp_path / "run.jsonl"
    result = run_scenario(parse_scenario(text), trace=trace)
    assert result.passed, result.verdicts
    source = ReplaySource.open(trace)
    names = flagged(source)
    assert name in names, f"flagged: {names}"
    # Within a second of the fault that made it, or of the connection for a fault that
    # acts from the start (the bound, not a speed claim).
    causes = [
        r["t"]
        for r in read_trace(trace).timeline()
        if r["type"] == "fault" or r.get("event") == "connected"
    ]
    before = [t for t in causes if t <= names[name]]
    assert before and names[name] - max(before) <= ARISES, (names, causes)
    # No other hang: a fault of one kind is not reported as another.
    assert set(names) <= {name} | also, f"flagged: {names}"


#: Where every scenario above publishes its channel (the default path).
CHANNEL = "data/vchansim"
#: Seconds a live run may take before the test gives up on it (a liveness bound).
RUN_DEADLINE = 90.0


#: What :func:`lasting` changes: stalls last 3 s; the dropped wake-ups go on for 12
#: writes; the slow reader's faults come after 24 KiB of 48 KiB (some 2.4 s in), when the
#: inspector is watching.
LASTING = {
    "duration = 1.0": "duration = 3.0",
    "send = 8192\nwrite_size = 2048": "send = 24576\nwrite_size = 2048",
    "send = 16384": "send = 49152",
    "after_received = 4096": "after_received = 24576",
}


#: Every case but missed-close, whose fault races the sleeper: a client that clears its
#: live byte just after the read that woke the server either finds the server asleep
#: again (the state then lasts some 0.25 s, and the live view flags it) or is too quick,
#: and the server sees the close at once -- no state to flag.  The runner's trace
#: sampling slows the client enough that the replay always gets the first outcome; a
#: live run without it gets the second about one time in four.
LIVE_CASES = [case for case in CASES if case[1] != "missed-close"]


def lasting(text: str) -> str:
    """``text`` made to last, so that an inspector attaching as the channel comes up (its
    first frame takes most of a second under load) is watching when the stall arises."""
    longer = text
    for short, long in LASTING.items():
        longer = longer.replace(short, long)
    assert longer != text
    return longer


def youngest_sleep(frame: Frame) -> float:
    """The age of the most recent sleep in ``frame``: a stall cannot be older than the
    sleep that makes it (both, for a deadlock)."""
    return min(w.age for w in frame.waits or () if w is not None)


@pytest.mark.parametrize(
    ("text", "name", "also"), LIVE_CASES, ids=[case[1] for case in LIVE_CASES]
)
def test_the_inspector_attached_to_a_running_scenario_flags_its_stall_live(
    tmp_path: Path, text: str, name: str, also: set[str]
) -> None:
    """``vchansim run --rundir DIR`` in its own process, the inspector on DIR waiting for
    the scenario's channel: the verdict is on screen while the sleep it names is at most
    :data:`ARISES` old (an end re-arms its sleep at every liveness re-check, so a sleep
    is at most half a second old when its verdict can first be given).  An unasked wait
    from a one-off fault ends at the sleeper's next re-check, some 0.25 s later: the
    view keeps a verdict that is over, so the test finds it there (and on screen) even
    if it ended between two of its looks."""
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(lasting(text))
    rundir = tmp_path / "run"
    app = InspectorApp(rundir=prepare_rundir(rundir), attach=CHANNEL)
    ages: dict[str, float] = {}  # verdict -> age of the youngest sleep when first shown

    async def main() -> int:
        async with app.run_test(size=(120, 40)) as pilot:
            run = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "vchansim", "run", str(scenario), "--rundir",
                str(rundir), "--json", "--no-progress",
                stdout=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + RUN_DEADLINE
            while run.returncode is None and time.monotonic() < deadline:
                screen = app.screen
                frame = screen.frame if isinstance(screen, LiveScreen) else None
                for stall in frame.stalls if frame is not None else ():
                    if stall.name not in ages:
                        ages[stall.name] = youngest_sleep(frame)
                        assert f"{stall.name}: " in app.export_text()
                for seen in frame.ended if frame is not None else ():
                    if seen.name not in ages:
                        ages[seen.name] = seen.age
                        assert f"{seen.name} from t {seen.arose:.2f}" in app.export_text()
                await pilot.pause(0.02)
            if run.returncode is None:
                run.kill()
            return await run.wait()

    assert asyncio.run(main()) == 0, "the scenario failed, or outlived its deadline"
    assert name in ages, f"flagged live: {ages}"
    assert ages[name] <= ARISES, ages
    assert set(ages) <= {name} | also, f"flagged live: {ages}"
