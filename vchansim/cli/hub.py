"""``vchansim hub``: run the emulated hypervisor and xenstored in the foreground.

Every grant, event-channel and XenStore operation is logged.  Backends start an embedded
hub by themselves when none runs; run this one to watch what they do.  The options are
those of ``python -m vchansim.hub``.
"""

from __future__ import annotations

import argparse

from ..hub.__main__ import main as hub_main


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "hub",
        help="run the hub (grant tables, event channels, xenstored) in the foreground",
        description=__doc__,
        add_help=False,
    )
    parser.add_argument("hub_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(func=lambda args: hub_main(args.hub_args))
