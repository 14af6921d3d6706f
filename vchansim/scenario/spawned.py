"""Endpoints as processes of their own: how they start, are signalled and reaped.

Each endpoint instance is a process forked from a *fork server*: a fresh interpreter,
started (executed, not forked) by the first executor of this process, inheriting no
descriptor of ours but its own two, which imports what an endpoint runs once
(:data:`PRELOAD`) and then forks one child per endpoint.  So an endpoint inherits no
machine connection from the runner -- the server never opens one, and a child of ours
forked directly would hold our hub socket or Xen devices, and its death would then not
look like a death to the machine -- and it starts in the time of a fork instead of an
interpreter's start-up and imports (tens of seconds each under an emulated CPU).

The server lives as long as this process; endpoints get the environment this process
had when the server started.  The executors that run endpoints as processes
(``executors.ProcessExecutor`` on the emulator's hub, ``xen_executor.XenExecutor`` on
real Xen) share this.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

import multiprocess
import multiprocess.forkserver

from .endpoint import Endpoint, EndpointJob, Link
from .program import ProgramEndpoint

#: What the fork server imports before its first fork: the main module (as a spawned
#: process would), this module (the scenario package, the endpoint and its messages) and
#: the executors with the backends an endpoint's job names.
PRELOAD = ["__main__", __name__, "vchansim.scenario.executors"]


def endpoint_main(job: EndpointJob, conn: Any) -> None:
    """Entry point of an endpoint process or thread."""
    kind = ProgramEndpoint if job.program else Endpoint
    kind(job, Link(conn)).run()


class Spawned:
    """Endpoints as processes forked by the fork server: how they start, are signalled
    and reaped (the machine they meet on is the subclass's)."""

    def __init__(self) -> None:
        self._ctx = multiprocess.get_context("forkserver")
        self._ctx.set_forkserver_preload(PRELOAD)
        # Started now, before the subclass connects to its machine, so that its imports
        # overlap the runner's set-up (no-op once it runs).
        multiprocess.forkserver.ensure_running()

    def start(self, job: EndpointJob) -> tuple[Any, Any, int | None]:
        ours, theirs = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=endpoint_main, args=(job, theirs), name=f"vchansim-{job.name}", daemon=True
        )
        proc.start()
        theirs.close()  # only the child holds its end now: its exit is our end-of-file
        return ours, proc, proc.pid

    def kill(self, handle: Any) -> None:
        self.signal(handle, signal.SIGKILL)

    def signal(self, handle: Any, signo: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(handle.pid, signo)

    #: Seconds a process whose pipe has ended gets to exit before it is reported alive.
    reap_wait = 5.0

    def reap(self, handle: Any) -> int | None:
        handle.join(self.reap_wait)
        code: int | None = handle.exitcode
        return code
