"""Endpoints as spawned processes: how they start, are signalled and reaped.

Each endpoint instance is a process of its own, started with the *spawn* method so that
it inherits no machine connection from us (a forked child would hold our handles, and
its death would then not look like a death to the machine).  The executors that run
endpoints as processes (``executors.ProcessExecutor`` on the emulator's hub,
``xen_executor.XenExecutor`` on real Xen) share this.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

import multiprocess

from .endpoint import Endpoint, EndpointJob, Link
from .program import ProgramEndpoint


def endpoint_main(job: EndpointJob, conn: Any) -> None:
    """Entry point of an endpoint process or thread."""
    kind = ProgramEndpoint if job.program else Endpoint
    kind(job, Link(conn)).run()


class Spawned:
    """Endpoints as spawned processes: how they start, are signalled and reaped (the
    machine they meet on is the subclass's)."""

    def __init__(self) -> None:
        self._ctx = multiprocess.get_context("spawn")

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

    def reap(self, handle: Any) -> int | None:
        handle.join(5.0)
        code: int | None = handle.exitcode
        return code
