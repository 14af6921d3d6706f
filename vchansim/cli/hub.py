"""vchansim hub: run the emulated hypervisor and xenstored in the foreground.

Every grant, event-channel and XenStore operation is logged.  Backends start an embedded
hub by themselves when none runs; run this one to watch what they do.
"""

from __future__ import annotations

from ..hub.__main__ import add_arguments, run
from .common import Subcommands


def register(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "hub",
        help="run the hub (grant tables, event channels, xenstored) in the foreground",
        description=__doc__,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
