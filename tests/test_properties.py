"""The channel's three properties, over random scenarios (hypothesis):

* Integrity -- what is read is exactly a prefix of what was written, whatever the ring
  sizes, chunk sizes, modes, stalls and tampered notifications;
* Availability -- a blocked reader wakes when data arrives and a blocked writer when
  space frees: no wait ever has to be rescued by the periodic liveness re-check;
* ShutdownOK -- a close (or a death) is observed by the peer, promptly, and nothing hangs
  or leaks.

Most examples run on the in-process backend (threads: fast, so hypothesis can explore);
a few run the same properties over real processes and the shm hub.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vchansim import layout
from vchansim.scenario import run_scenario, scenario_from_dict

RING_SIZES = [0, 1024, 2048, 4096, 8192, 65536]
#: Calls per direction an example may take, about (chunk sizes are drawn accordingly).
MAX_OPS = 400
#: Who sends: one side, the other, both, or the client with the server echoing.
DIRECTIONS = ("srv", "cli", "both", "echo")
#: In-process examples are cheap; process examples cost a few hundred ms each.
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def size_range(draw: st.DrawFn, carried: int, top: int) -> list[int]:
    """A ``[low, high]`` chunk-size range up to ``top`` for moving ``carried`` bytes, never
    so small that it takes more than about MAX_OPS calls (a slow example proves no more)."""
    low = draw(st.integers(min(top, max(1, -(-carried // MAX_OPS))), top))
    return [low, draw(st.integers(low, top))]


def ring_sizes(read_min: int, write_min: int) -> dict[str, int]:
    """The ring each endpoint writes into: the server the right one, the client the left."""
    left, right = layout.choose_orders(read_min, write_min)
    return {"srv": layout.ring_size(right), "cli": layout.ring_size(left)}


@st.composite
def channels(
    draw: st.DrawFn, backend: str = "memory", directions: tuple[str, ...] = DIRECTIONS
) -> dict[str, Any]:
    """A random two-endpoint scenario: rings, modes, directions, sizes, blocking."""
    read_min, write_min = draw(st.sampled_from(RING_SIZES)), draw(st.sampled_from(RING_SIZES))
    rings = ring_sizes(read_min, write_min)
    packets = draw(st.booleans())
    senders = draw(st.sampled_from(directions))
    sends = {
        name: draw(st.integers(1, 150_000))
        if senders in (name, "both") or (senders == "echo" and name == "cli")
        else 0
        for name in ("srv", "cli")
    }
    # what each one reads: its peer's stream, or (echo) the client's both ways
    incoming = {"srv": sends["cli"], "cli": sends["cli"] if senders == "echo" else sends["srv"]}
    works: dict[str, dict[str, Any]] = {}
    for name in ("srv", "cli"):
        work: dict[str, Any] = {"mode": "packets" if packets else "stream"}
        if sends[name]:
            # an echoed packet must also fit the ring it comes back through
            top = min(rings.values()) if senders == "echo" else rings[name]
            work["send"] = sends[name]
            work["write_size"] = size_range(draw, sends[name], top if packets else 3 * top)
        if senders == "echo" and name == "srv":
            work["echo"] = True
        if not packets:
            work["read_size"] = size_range(draw, incoming[name], 3 * rings[name])
        works[name] = work
    return {
        "scenario": {"name": "prop", "seed": draw(st.integers(0, 2**32)), "backend": backend},
        "endpoints": {
            "srv": {
                "role": "server",
                "read_min": read_min,
                "write_min": write_min,
                "blocking": draw(st.booleans()),
                "workload": works["srv"],
            },
            "cli": {"role": "client", "blocking": draw(st.booleans()), "workload": works["cli"]},
        },
        "faults": [],
        "expect": [],
    }


def receivers_of(scenario: dict[str, Any]) -> list[str]:
    parsed = scenario_from_dict({**scenario, "faults": [], "expect": [{"kind": "clean"}]})
    return [name for name in parsed.names if parsed.receives(name)]


def expect(scenario: dict[str, Any], *kinds: dict[str, Any]) -> dict[str, Any]:
    scenario["expect"] = list(kinds)
    return scenario


def check(scenario: dict[str, Any]) -> None:
    result = run_scenario(scenario_from_dict(scenario, source="<hypothesis>"))
    assert result.passed, result.summary()


# -- Integrity --------------------------------------------------------------------------------


@st.composite
def disturbed(draw: st.DrawFn, backend: str = "memory") -> dict[str, Any]:
    """A random channel plus the disturbances that must not cost a byte."""
    scenario = draw(channels(backend))
    for name in scenario["endpoints"]:
        if draw(st.booleans()):
            action = draw(st.sampled_from(["duplicate", "delay", "spurious"]))
            scenario["faults"].append(
                {
                    "kind": "notify",
                    "endpoint": name,
                    "action": action,
                    "every": 2,
                    "delay": 0.002,
                    "rate": 300.0,
                }
            )
    for name in receivers_of(scenario):
        if draw(st.booleans()):
            scenario["faults"].append(
                {
                    "kind": "stall",
                    "endpoint": name,
                    "duration": 0.02,
                    "after_received": draw(st.integers(0, 20_000)),
                }
            )
    return scenario


@FAST
@given(disturbed())
def test_integrity_what_is_read_is_what_was_written(scenario):
    check(expect(scenario, {"kind": "delivered"}, {"kind": "integrity"}, {"kind": "clean"}))


@SLOW
@given(disturbed(backend="shm"))
def test_integrity_over_processes(scenario):
    check(expect(scenario, {"kind": "delivered"}, {"kind": "clean"}, {"kind": "no_leaks"}))


# -- Availability ---------------------------------------------------------------------------------


@st.composite
def paced(draw: st.DrawFn, backend: str = "memory") -> dict[str, Any]:
    """A random channel where each side sometimes waits for the other: a slow producer
    blocks its reader on an empty ring, a slow consumer its writer on a full one."""
    scenario = draw(channels(backend))
    for spec in scenario["endpoints"].values():
        spec["spin"] = "off"  # a blocked call must sleep on the event channel, not poll
        work = spec["workload"]
        if "send" in work:
            work["send"] = min(work["send"], 40_000)
        if draw(st.booleans()):
            work["write_pause"] = 0.0005
        if draw(st.booleans()):
            work["read_pause"] = 0.0005
    return scenario


def no_rescued_waits(scenario: dict[str, Any]) -> None:
    result = run_scenario(scenario_from_dict(scenario, source="<hypothesis>"))
    assert result.passed, result.summary()
    for inst in result.record.instances:
        assert inst.events.get("timeouts") == 0, (
            f"{inst.name} waited {inst.events['timeouts']} time(s) for an event that never "
            f"came:\n{result.summary()}"
        )


@FAST
@given(paced())
def test_availability_every_blocked_call_is_woken_by_an_event(scenario):
    no_rescued_waits(expect(scenario, {"kind": "delivered"}, {"kind": "no_hang", "within": 20}))


@SLOW
@given(paced(backend="shm"))
def test_availability_over_processes(scenario):
    no_rescued_waits(expect(scenario, {"kind": "delivered"}, {"kind": "no_hang", "within": 20}))


# -- ShutdownOK --------------------------------------------------------------------------------


@st.composite
def one_way_with_an_early_end(draw: st.DrawFn, backend: str, ends: list[str]) -> dict[str, Any]:
    """The server streams to the client and ends at a random point, by one of ``ends``.

    An early end comes only once more than a ring-full was sent: the client has then
    certainly connected, so there is a close for it to see."""
    scenario = draw(channels(backend, directions=("srv",)))
    srv = scenario["endpoints"]["srv"]
    send = srv["workload"]["send"]
    ring = ring_sizes(srv["read_min"], srv["write_min"])["srv"]
    how = draw(st.sampled_from(ends))
    if how != "finish" and send > ring + 1:
        at = draw(st.integers(ring + 1, send))
        scenario["faults"].append({"kind": how, "endpoint": "srv", "after_sent": at})
    return scenario


SHUTDOWN_OK = (
    {"kind": "close_seen", "endpoint": "cli", "within_ms": 2000},
    {"kind": "delivered"},
    {"kind": "no_hang", "within": 10},
    {"kind": "no_leaks", "allow_xenstore": True},
)


@FAST
@given(one_way_with_an_early_end("memory", ["finish", "close"]))
def test_shutdown_a_close_is_seen_and_nothing_hangs(scenario):
    check(expect(scenario, *SHUTDOWN_OK))


@SLOW
@given(one_way_with_an_early_end("shm", ["finish", "close", "kill"]))
def test_shutdown_even_a_killed_peer_is_seen_over_processes(scenario):
    check(expect(scenario, *SHUTDOWN_OK))
