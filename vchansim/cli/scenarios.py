"""vchansim scenarios: the scenario library shipped with vchansim.

"vchansim scenarios list" prints each built-in scenario's name and description; run one
with "vchansim run NAME", or all of them with "vchansim run all".
"""

from __future__ import annotations

import argparse
import json

from ..library import builtin_names, builtin_path
from ..scenario import load_scenario
from .common import Subcommands


def register(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "scenarios",
        help="list the built-in scenarios",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", help="print the built-in scenarios' names and descriptions"
    )
    listing.add_argument(
        "--json", action="store_true", help="print them as JSON instead of a table"
    )
    listing.set_defaults(func=list_builtins)


def list_builtins(args: argparse.Namespace) -> int:
    entries = [(name, load_scenario(builtin_path(name)).description) for name in builtin_names()]
    if args.json:
        print(json.dumps([{"name": n, "description": d} for n, d in entries], indent=2))
        return 0
    width = max((len(name) for name, _ in entries), default=0)
    for name, description in entries:
        print(f"{name:{width}}  {description}")
    return 0
