"""vchansim agent: run scenario endpoints in this domain when another domain asks.

Run it in a guest (or, on the emulator, as a domain of the hub: --domid N) and leave it
running; "vchansim run --client-domain N" in dom0 then runs each scenario's client here
and its server in dom0.  The agent watches data/vchansim-agent under this domain's home
in XenStore: dom0 writes a job there, the agent forks the endpoint (on this domain's
backend), relays its reports and commands, and writes how it ended.  A request it cannot
run is answered with one line saying why; the agent goes on.  It runs until stopped
(Ctrl-C or SIGTERM), then kills the endpoints it still runs and removes its ready
mark.

    vchansim agent --backend xen                  # in a Xen guest
    vchansim agent --domid 3 --rundir DIR         # domain 3 of the emulator's hub in DIR
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from ..agent import Agent
from ..backends import chosen_backend, get_backend
from ..backends.base import Backend
from ..scenario.agentjob import ENDPOINT_KIND, endpoint_kind
from .common import Subcommands, add_backend_options, add_command, open_backend


def register(subparsers: Subcommands) -> None:
    parser = add_command(
        subparsers, "agent", "run scenario endpoints in this domain for another", __doc__
    )
    add_backend_options(parser)
    parser.set_defaults(func=run)


def _stop(signo: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    backend = open_backend(args)
    name, rundir = chosen_backend(args.backend), args.rundir

    def backends(domid: int) -> Backend:
        extra = {"rundir": rundir} if rundir is not None else {}
        return get_backend(name, domid=domid, **extra)

    signal.signal(signal.SIGTERM, _stop)
    store = backend.store()
    try:
        print(f"vchansim agent: domain {backend.domid} ready", file=sys.stderr, flush=True)
        Agent(store, backend.domid, {ENDPOINT_KIND: endpoint_kind(backends)}).serve()
    finally:
        store.close()
        backend.close()
    return 0
