"""Unmap-notify: however a peer process goes away, the survivor's byte is cleared and an
event arrives -- quickly (the product owner's bound: under 100 ms after SIGKILL)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
from helpers import procs

from vchansim.backends.shm import ShmBackend
from vchansim.leaks import assert_no_leaks
from vchansim.rundir import RunDir

LATENCY_BOUND = 0.100
CLI_LIVE, SRV_LIVE = 20, 21

#: The peer, domain 2 mapping our page ("mapper") or domain 1 sharing one ("sharer"),
#: registers an unmap-notify on its liveness byte, then obeys one order.
PEER = """
role = os.environ["ROLE"]
backend = ShmBackend(2 if role == "mapper" else 1)
grants, events = backend.grants(), backend.events()
if role == "mapper":
    ref, remote_port = map(int, hear().split())
    port = events.bind_interdomain(1, remote_port)
    mapping = grants.map(1, [ref])
    live = 20
else:
    port = events.bind_unbound(2)
    mapping = grants.share(2, 1)
    live = 21
grants.set_unmap_notify(mapping, live, port)
mapping.buf[live] = 1
say("ready", mapping.refs[0], port)
order = hear()
if order == "close":
    mapping.close()
elif order == "raise":
    raise RuntimeError("the endpoint crashed")
elif order == "close-events":
    events.close()
say("done")
hear()
"""


def _trigger(child: procs.Child, mode: str) -> None:
    if mode == "sigkill":
        child.proc.send_signal(signal.SIGKILL)
    elif mode == "events-closed-then-sigkill":
        child.send("close-events")
        child.expect("done")
        child.proc.send_signal(signal.SIGKILL)
    else:
        child.send({"clean-close": "close", "exception": "raise"}[mode])


MODES = ["clean-close", "exception", "sigkill", "events-closed-then-sigkill"]


@pytest.mark.parametrize("role", ["mapper", "sharer"])
@pytest.mark.parametrize("mode", MODES)
def test_peer_going_away_clears_byte_and_sends_event(
    rundir: RunDir, spawn: Callable[..., procs.Child], mode: str, role: str
) -> None:
    me = ShmBackend(1 if role == "mapper" else 2)
    grants, events = me.grants(), me.events()
    try:
        child = spawn(PEER, ROLE=role)
        if role == "mapper":
            port = events.bind_unbound(2)
            mapping = grants.share(2, 1)
            child.send(f"{mapping.refs[0]} {port}")
            child.expect("ready")
            live = CLI_LIVE
        else:
            ref, remote_port = map(int, child.expect("ready"))
            port = events.bind_interdomain(1, remote_port)
            assert events.pending(0) == port  # a fresh interdomain port starts pending
            events.unmask(port)
            mapping = grants.map(1, [ref])
            live = SRV_LIVE
        assert mapping.buf[live] == 1

        start = time.monotonic()
        _trigger(child, mode)
        fired = events.pending(timeout=5.0)
        elapsed = time.monotonic() - start
        byte = mapping.buf[live]
        print(f"\n{role} {mode}: byte cleared and event received after {elapsed * 1e3:.1f} ms")
        assert fired == port
        assert byte == 0  # the hub clears the byte before it sends the event
        assert elapsed < LATENCY_BOUND
        child.kill()
        mapping.close()
    finally:
        grants.close()
        events.close()
    assert_no_leaks(rundir)
