"""vchansim serve and vchansim connect: stdin/stdout over a vchan, both ways.

Like Xen's vchan-node tools: serve offers the vchan and waits for its client;
connect joins it.  End of stdin closes the channel cleanly, after everything read has
gone into the ring; the peer's close ends the command once its data is all out.
"""

from __future__ import annotations

import argparse
import sys

from .. import layout
from ..bridge import bridge
from ..channel import Vchan
from .common import add_backend_options, add_command, open_backend, size


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = _command(subparsers, "serve", "offer a vchan to PEER_DOMID at PATH")
    serve.add_argument(
        "--read-min",
        type=size,
        default=0,
        metavar="BYTES",
        help="smallest receive ring (default 0: the in-page rings)",
    )
    serve.add_argument(
        "--write-min", type=size, default=0, metavar="BYTES", help="smallest send ring (default 0)"
    )
    serve.set_defaults(func=_serve)
    connect = _command(subparsers, "connect", "connect to PEER_DOMID's vchan at PATH")
    connect.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the server to appear (default 10)",
    )
    connect.set_defaults(func=_connect)


def _command(
    subparsers: argparse._SubParsersAction, name: str, what: str
) -> argparse.ArgumentParser:
    """serve/connect: the same peer, path and backend arguments."""
    parser = add_command(subparsers, name, f"{what} and pipe stdin/stdout over it", __doc__)
    parser.add_argument("peer", type=int, metavar="PEER_DOMID", help="the other domain's id")
    parser.add_argument(
        "path",
        metavar="PATH",
        help="XenStore path: absolute, or relative to the serving domain's home",
    )
    add_backend_options(parser)
    return parser


def _serve(args: argparse.Namespace) -> int:
    backend = open_backend(args)
    with Vchan.server(backend, args.peer, args.path, args.read_min, args.write_min) as chan:
        print(
            f"vchansim serve: domain {backend.domid} offers {args.path!r} to domain "
            f"{args.peer}; waiting for it",
            file=sys.stderr,
        )
        bridge(chan, sys.stdin.fileno(), sys.stdout.fileno())
        while chan.is_open() == layout.LIVE_WAITING:
            chan.wait()  # input ended before any client came: hold the data until one does
    return 0


def _connect(args: argparse.Namespace) -> int:
    backend = open_backend(args)
    path = args.path if args.path.startswith("/") else f"/local/domain/{args.peer}/{args.path}"
    with Vchan.client(backend, args.peer, path, wait=args.wait) as chan:
        bridge(chan, sys.stdin.fileno(), sys.stdout.fileno())
    return 0
