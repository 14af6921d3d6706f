"""SIGKILL either end of a vchan at a random point -- just after set-up, mid-transfer,
blocked in a read, blocked in a write -- with Python and C (vchan-pipe on Debian's
libxenvchan) ends: the survivor always notices, nothing hangs, nothing leaks.

Each case is drawn from its seed (the test id), so a failure is rerun exactly with
``-k 'seed-N'``; ``VCHANSIM_KILL_RUNS`` sets how many cases run (default 12: the suite's
share; raise it for a soak).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import pytest

from vchansim import layout
from vchansim.scenario import run_scenario, scenario_from_dict

RUNS = int(os.environ.get("VCHANSIM_KILL_RUNS", "12"))
PHASES = ("setup", "mid-transfer", "blocked-in-read", "blocked-in-write")
#: More than either end can move before the kill: nobody finishes first.
ENDLESS = 1 << 30
#: Generous bounds for a loaded 2-core machine; deaths are seen in milliseconds here.
SEEN_WITHIN_MS = 3000
DEADLINE = 40
RING_MINS = [0, 4096, 65536]


@dataclass(frozen=True)
class Case:
    """Who dies (``victim``, a ``kind`` endpoint) at which kill point, in ``scenario``."""

    phase: str
    victim: str
    kind: str
    scenario: dict[str, Any]


def draw_case(seed: int) -> Case:
    """A two-endpoint shm scenario with one kill, drawn from ``seed``."""
    rnd = random.Random(seed)
    victim = rnd.choice(["srv", "cli"])
    survivor = "cli" if victim == "srv" else "srv"
    phase = rnd.choice(PHASES)
    kinds = {victim: rnd.choice(["python", "program"]), survivor: "python"}
    # A program survivor is told up front how much it receives: only a Python victim,
    # dying at a byte offset, can say that.  The blocked phases need a Python survivor,
    # which paces its end (a program moves its bytes as fast as it can).
    if kinds[victim] == "python" and not phase.startswith("blocked"):
        kinds[survivor] = rnd.choice(["python", "program"])
    works = {victim: _work(kinds[victim]), survivor: _work(kinds[survivor])}
    if phase == "blocked-in-read":  # the victim waits for a trickle from the survivor
        works[victim]["send"] = 0
        works[survivor].update(write_size=64, write_pause=0.01)
    elif phase == "blocked-in-write":  # the victim fills the ring of a slow reader
        works[survivor].update(send=0, read_size=4096, read_pause=0.002)
    kill: dict[str, Any] = {"kind": "kill", "endpoint": victim}
    # A program is told up front how much it receives, so a Python victim sending to one
    # dies at a byte offset (it kills itself exactly there); other victims die at a time.
    by_bytes = kinds[victim] == "python" and (
        kinds[survivor] == "program" or (phase == "mid-transfer" and rnd.random() < 0.5)
    )
    read_min, write_min = rnd.choice(RING_MINS), rnd.choice(RING_MINS)
    if by_bytes:
        # More than a ring-full: its peer has certainly connected by then.
        first = _ring_size(victim, read_min, write_min) + 1
        kill["after_sent"] = first if phase == "setup" else rnd.randint(first, 4 << 20)
    else:
        kill["at"] = 0.0 if phase == "setup" else round(rnd.uniform(0.02, 0.4), 3)
    endpoints = {
        "srv": {
            "role": "server",
            "kind": kinds["srv"],
            "read_min": read_min,
            "write_min": write_min,
            "workload": works["srv"],
        },
        "cli": {"role": "client", "kind": kinds["cli"], "workload": works["cli"]},
    }
    scenario = {
        "scenario": {
            "name": f"kill-{phase}-{victim}",
            "description": f"SIGKILL the {kinds[victim]} {victim} ({phase}); "
            f"the {kinds[survivor]} {survivor} must notice",
            "seed": seed,
            "deadline": DEADLINE,
        },
        "endpoints": endpoints,
        "faults": [kill],
        "expect": [
            {"kind": "close_seen", "endpoint": survivor, "within_ms": SEEN_WITHIN_MS},
            {"kind": "integrity"},
            {"kind": "no_hang", "within": DEADLINE - 10},
            # A killed server cannot remove its two keys: on Xen too they stay.
            {"kind": "no_leaks", "allow_xenstore": victim == "srv"},
        ],
    }
    return Case(phase, victim, kinds[victim], scenario)


def _ring_size(sender: str, read_min: int, write_min: int) -> int:
    """The ring ``sender`` writes into: the server the right one, the client the left."""
    left, right = layout.choose_orders(read_min, write_min)
    return layout.ring_size(right if sender == "srv" else left)


def _work(kind: str) -> dict[str, Any]:
    work: dict[str, Any] = {"send": ENDLESS}
    if kind == "python":
        work["read_size"] = [1, 65536]
        work["write_size"] = [1, 65536]
    return work


@pytest.mark.parametrize("seed", [pytest.param(n, id=f"seed-{n}") for n in range(RUNS)])
def test_a_random_kill_is_noticed_and_leaves_nothing(seed: int) -> None:
    case = draw_case(seed)
    result = run_scenario(scenario_from_dict(case.scenario, source=f"<kill seed {seed}>"))
    assert result.passed, f"{case.scenario['scenario']['description']}\n{result.summary()}"


def test_the_cases_meet_every_kill_point_on_both_ends_in_python_and_c() -> None:
    if RUNS < 12:
        pytest.skip(f"{RUNS} cases are too few to meet every kill point")
    cases = [draw_case(seed) for seed in range(RUNS)]
    assert {case.phase for case in cases} == set(PHASES)
    assert {case.victim for case in cases} == {"srv", "cli"}
    assert {case.kind for case in cases} == {"python", "program"}
