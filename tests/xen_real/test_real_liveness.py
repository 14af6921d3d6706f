"""A peer that dies -- SIGKILL, no chance to clean up -- is seen as gone on real Xen.

Nothing in the dying process runs: it is the kernel's unmap-notify, which the xen backend
registered through gntalloc (server) or gntdev (client), that clears the live byte and
fires the event.  The killed peer is C or Python; the observing end is Python, in this
process.  Peers are started before this process opens its own end, so a forked Python
peer inherits none of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from vchansim.backends.xen import XenBackend
from vchansim.channel import Vchan
from vchansim.errors import VchanError

IMPLS = ("python", "c")
DEADLINE = 30.0


def wait_until(chan: Vchan, condition: Callable[[], bool], timeout: float = DEADLINE) -> bool:
    """Sleep on the channel's events until ``condition`` holds; False at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        chan.wait(min(left, 1.0))
    return True


def connect_client(path: str) -> Vchan:
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return Vchan.client(XenBackend(), 0, path)
        except VchanError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


@pytest.mark.parametrize("impl", IMPLS)
def test_server_sees_a_killed_client_go(start, xs_path, impl):
    client = start(impl, "-w", 30, "client", 0, xs_path, "echo")
    with Vchan.server(XenBackend(), 0, xs_path) as chan:
        assert wait_until(chan, lambda: chan.is_open() == 1), "the client never connected"
        chan.write(b"x")
        assert chan.recv(1) == b"x"
        client.kill()
        assert wait_until(chan, lambda: chan.is_open() == 0), "cli_live still set after kill"


@pytest.mark.parametrize("impl", IMPLS)
def test_client_sees_a_killed_server_go(start, xs_path, impl):
    server = start(impl, "server", 0, xs_path, "echo")
    with connect_client(xs_path) as chan:
        chan.write(b"y")
        assert chan.recv(1) == b"y"
        assert chan.is_open() == 1
        server.kill()
        assert wait_until(chan, lambda: chan.is_open() == 0), "srv_live still set after kill"
