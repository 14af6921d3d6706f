"""vchansim domain: create, destroy and list emulated domains, as Xen's toolstack does.

"vchansim domain create N" gives domain N its XenStore home (name, uuid) and introduces
it (@introduceDomain); "vchansim domain destroy N" removes it, releases it
(@releaseDomain) and closes its event channels; "vchansim domain list" shows every
domain.  A domain need not be created to be used: a process acting as domain N makes it
exist.  Create domains before starting programs that check that their peer's domain is
alive (Qubes' libvchan-xen does).  See docs/qubes.md.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from ..domains import create_domain, destroy_domain, list_domains
from .common import Subcommands


def register(subparsers: Subcommands) -> None:
    parser = subparsers.add_parser(
        "domain",
        help="create, destroy and list emulated domains",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rundir", help="run directory (default: $VCHANSIM_RUNDIR, else the user's)"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create domain N")
    create.add_argument("domid", type=int, metavar="N")
    create.add_argument("--name", help="its name (default: domainN)")
    create.add_argument("--uuid", help="its UUID (default: a random one)")
    create.set_defaults(func=_create)
    destroy = actions.add_parser("destroy", help="destroy domain N")
    destroy.add_argument("domid", type=int, metavar="N")
    destroy.set_defaults(func=_destroy)
    listing = actions.add_parser("list", help="list the domains")
    listing.add_argument("--json", action="store_true", help="print them as JSON")
    listing.set_defaults(func=_list)


def _create(args: argparse.Namespace) -> int:
    info = create_domain(args.domid, name=args.name, uuid=args.uuid, rundir=args.rundir)
    print(f"domain {info.domid} created: {info.name} {info.uuid}")
    return 0


def _destroy(args: argparse.Namespace) -> int:
    destroy_domain(args.domid, rundir=args.rundir)
    print(f"domain {args.domid} destroyed")
    return 0


def _list(args: argparse.Namespace) -> int:
    domains = list_domains(args.rundir)
    if args.json:
        print(json.dumps([asdict(info) for info in domains], indent=2))
        return 0
    print(f"{'ID':>5}  {'NAME':20}  UUID")
    for info in domains:
        print(f"{info.domid:>5}  {info.name or '-':20}  {info.uuid or '-'}")
    return 0
