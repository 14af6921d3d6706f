"""vchansim serve and vchansim connect: stdin/stdout over a vchan, both ways.

Like Xen's vchan-node tools: serve offers the vchan and waits for its client;
connect joins it.  A vchan cannot be half-closed, so at the end of its stdin an end
stops sending, keeps receiving, and one end decides when the session is over:

  connect   keeps receiving until the server closes (as nc does);
  serve     waits for its client, then closes once the client has read everything
            serve sent -- giving up if the client reads nothing for --linger seconds.

--at-eof swaps the parts: to send a file from the client to the server, run
"serve --at-eof receive >FILE" and "connect --at-eof close <FILE".  Exactly one of the
two ends must close: two ends that both receive wait for each other until interrupted.
In a script, "serve ... &" gets /dev/null as stdin and so closes as soon as its client
is there: give it "<FILE", or "--at-eof receive".

The peer's close ends either command once everything it wrote is on stdout.

exit status:
  0  every byte read from stdin was read by the peer, and every byte the peer wrote
     reached stdout
  1  the channel could not be set up (or a backend failed): one line says why
  2  bad command-line arguments
  3  the session ended with data undelivered: one line gives the counts (bytes read
     from stdin but not sent, sent but not read by the peer, received but not output)
"""

from __future__ import annotations

import argparse
import os
import sys

from ..bridge import Ending, Tally, bridge
from ..channel import Vchan
from ..errors import ConfigError
from .common import Subcommands, add_backend_options, add_command, open_backend, seconds, size

#: The exit status of a session that ended with bytes undelivered.
UNDELIVERED = 3


def register(subparsers: Subcommands) -> None:
    serve = _command(subparsers, "serve", "offer a vchan to PEER_DOMID at PATH", Ending.CLOSE)
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
    connect = _command(
        subparsers, "connect", "connect to PEER_DOMID's vchan at PATH", Ending.RECEIVE
    )
    connect.add_argument(
        "--wait",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the server to appear (default 10; inf: no bound)",
    )
    connect.set_defaults(func=_connect)


def _command(
    subparsers: Subcommands,
    name: str,
    what: str,
    ending: Ending,
) -> argparse.ArgumentParser:
    """serve/connect: the same peer, path, ending and backend arguments."""
    parser = add_command(subparsers, name, f"{what} and pipe stdin/stdout over it", __doc__)
    parser.add_argument(
        "--at-eof",
        type=Ending,
        choices=list(Ending),
        default=ending,
        help=f"at the end of stdin: close once the peer has read everything sent, or "
        f"receive until the peer closes (default {ending})",
    )
    parser.add_argument(
        "--linger",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="with --at-eof close: how long the peer may read nothing before this end "
        "gives up on it and closes (default 10; inf: no bound)",
    )
    parser.add_argument("peer", type=int, metavar="PEER_DOMID", help="the other domain's id")
    parser.add_argument(
        "path",
        metavar="PATH",
        help="XenStore path: absolute, or relative to the serving domain's home",
    )
    add_backend_options(parser)
    return parser


def _serve(args: argparse.Namespace) -> int:
    _check_std_fds()
    backend = open_backend(args)
    with Vchan.server(backend, args.peer, args.path, args.read_min, args.write_min) as chan:
        print(
            f"vchansim serve: domain {backend.domid} offers {args.path!r} to domain "
            f"{args.peer}; waiting for it",
            file=sys.stderr,
        )
        tally = bridge(chan, 0, 1, ending=args.at_eof, patience=args.linger)
    return _verdict("serve", tally)


def _connect(args: argparse.Namespace) -> int:
    _check_std_fds()
    backend = open_backend(args)
    path = args.path if args.path.startswith("/") else f"/local/domain/{args.peer}/{args.path}"
    with Vchan.client(backend, args.peer, path, wait=args.wait) as chan:
        tally = bridge(chan, 0, 1, ending=args.at_eof, patience=args.linger)
    return _verdict("connect", tally)


def _check_std_fds() -> None:
    """Refuse to start without stdin and stdout: the first descriptor opened would
    take the free number and the session would pump a socket into itself."""
    for fd, name in ((0, "stdin"), (1, "stdout")):
        try:
            os.fstat(fd)
        except OSError:
            raise ConfigError(f"{name} is closed: give it a file, a pipe or /dev/null") from None


def _verdict(command: str, tally: Tally) -> int:
    """The exit status of a session; one line on stderr when data was not delivered."""
    if tally.delivered:
        return 0
    print(f"vchansim {command}: {tally.describe()}", file=sys.stderr)
    return UNDELIVERED
